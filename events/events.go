// Package events is the node's log of what happens, for GET /v1/events
// (server-sent events) and the web UI: each event has an id, increasing
// by one; a bounded window of the latest ones lets a client that
// reconnects with Last-Event-ID get what it missed, or learn that it must
// list again (a reset). Publishing never blocks: a subscriber that does
// not keep up is dropped, with the reason, once its bounded buffer is
// full.
package events

import (
	"encoding/json"
	"sync"
	"time"
)

// Event is one thing that happened.
type Event struct {
	ID   uint64          `json:"id"`
	Type string          `json:"type"`
	Time time.Time       `json:"time"`
	Data json.RawMessage `json:"data,omitempty"`

	wire []byte // SSE, encoded once
}

// ErrSlow is why a subscriber that did not keep up was dropped.
const ErrSlow = "the client did not read its events fast enough; reconnect with Last-Event-ID"

// Bus keeps the window of latest events and hands new ones to its
// subscribers. The zero value is not usable; use New.
type Bus struct {
	mu     sync.Mutex
	window []Event // a ring of the latest events, oldest at start
	start  int
	next   uint64 // the id of the next event
	subs   map[*Sub]struct{}
	now    func() time.Time

	published, dropped uint64
}

// New returns a bus that keeps the latest window events for resuming.
// Its ids start at the time of the call in microseconds, so that an id
// from an earlier run of the daemon is older than any of this run's
// (and a client resuming from it gets a reset, not wrong events).
func New(window int) *Bus {
	return newBus(window, uint64(time.Now().UnixMicro()))
}

func newBus(window int, first uint64) *Bus {
	return &Bus{window: make([]Event, 0, max(1, window)), next: first, subs: map[*Sub]struct{}{}, now: time.Now}
}

// Publish records an event of type typ with data (marshalled to JSON) and
// hands it to every subscriber that wants it. It never blocks.
func (b *Bus) Publish(typ string, data any) Event {
	raw, err := json.Marshal(data)
	if err != nil || data == nil {
		raw = nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ev := Event{ID: b.next, Type: typ, Time: b.now().UTC(), Data: raw}
	ev.wire = encodeSSE(ev)
	b.next++
	if len(b.window) < cap(b.window) {
		b.window = append(b.window, ev)
	} else {
		b.window[b.start] = ev
		b.start = (b.start + 1) % len(b.window)
	}
	for s := range b.subs {
		if !s.wants(typ) {
			continue
		}
		select {
		case s.c <- ev:
		default:
			s.drop(ErrSlow)
			delete(b.subs, s)
			b.dropped++
		}
	}
	b.published++
	return ev
}

// Sub is one subscriber: C delivers its events in order, and is closed
// when the subscriber is dropped (Reason says why) or closed.
type Sub struct {
	C <-chan Event
	// Last is the id of the latest event published before the
	// subscription began.
	Last   uint64
	c      chan Event
	types  map[string]bool
	bus    *Bus
	once   sync.Once
	reason string
}

func (s *Sub) wants(typ string) bool { return len(s.types) == 0 || s.types[typ] }

// drop closes C with reason. Called with the bus's lock held.
func (s *Sub) drop(reason string) {
	s.once.Do(func() {
		s.reason = reason
		close(s.c)
	})
}

// Reason says why C was closed ("" when the subscriber closed it).
func (s *Sub) Reason() string {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	return s.reason
}

// Close ends the subscription.
func (s *Sub) Close() {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	delete(s.bus.subs, s)
	s.drop("")
}

// Subscribe starts a subscription to the events of types (all when
// empty), with room for buffer events not yet read. When after is not
// nil, the events after id *after that the window still holds come
// first, in missed; reset reports that some of them are gone from the
// window (or that *after is an id this bus never gave, from before a
// restart), so the client must list again.
func (b *Bus) Subscribe(after *uint64, types []string, buffer int) (s *Sub, missed []Event, reset bool) {
	want := map[string]bool{}
	for _, t := range types {
		want[t] = true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if after != nil {
		missed, reset = b.since(*after)
		kept := missed[:0]
		for _, ev := range missed {
			if len(want) == 0 || want[ev.Type] {
				kept = append(kept, ev)
			}
		}
		missed = kept
	}
	c := make(chan Event, max(1, buffer))
	s = &Sub{C: c, c: c, types: want, bus: b, Last: b.next - 1}
	b.subs[s] = struct{}{}
	return s, missed, reset
}

// since returns the events after id in the window, and whether some
// events after id are no longer in it. Called with b.mu held.
func (b *Bus) since(id uint64) ([]Event, bool) {
	if id >= b.next {
		return nil, true // an id this bus never gave: from an earlier run
	}
	var out []Event
	for i := range b.window {
		ev := b.window[(b.start+i)%len(b.window)]
		if ev.ID > id {
			out = append(out, ev)
		}
	}
	oldest := b.next // nothing kept
	if len(b.window) > 0 {
		oldest = b.window[b.start].ID
	}
	return out, id+1 < oldest
}

// Stats is what the bus has done, for /v1/status and /metrics.
type Stats struct {
	// Subscribers is how many subscriptions are open.
	Subscribers int `json:"subscribers"`
	// Published counts the events published since the start.
	Published uint64 `json:"published"`
	// Dropped counts the subscribers dropped for not keeping up.
	Dropped uint64 `json:"dropped_subscribers"`
	// LastID is the id of the latest event (0: none yet).
	LastID uint64 `json:"last_id"`
}

// Stats returns the bus's counts.
func (b *Bus) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := Stats{Subscribers: len(b.subs), Published: b.published, Dropped: b.dropped}
	if b.published > 0 {
		st.LastID = b.next - 1
	}
	return st
}

// Subscribers returns how many subscriptions are open.
func (b *Bus) Subscribers() int { return b.Stats().Subscribers }
