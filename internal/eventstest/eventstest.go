// Package eventstest gives tests a fake events.Publisher that records
// what it is told to publish, so that a test can assert the events a
// component published without a Bus and its subscribers.
package eventstest

import (
	"slices"
	"sync"

	"github.com/streamconductor/stream-conductor/events"
)

// Published is one call of Publish, as the Recorder kept it.
type Published struct {
	Type string
	Data any
}

// Recorder is an events.Publisher that records every call of Publish, in
// order. Its zero value is ready to use, and it is safe for concurrent use.
type Recorder struct {
	mu  sync.Mutex
	evs []Published
}

var _ events.Publisher = (*Recorder)(nil)

// Publish records the event and returns an events.Event of its type only:
// a Recorder encodes nothing and numbers nothing.
func (r *Recorder) Publish(typ string, data any) events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, Published{Type: typ, Data: data})
	return events.Event{Type: typ}
}

// Take returns, in the order published, the recorded events of the given
// types (all of them when none is given) and forgets them; the others stay.
func (r *Recorder) Take(types ...string) []Published {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out, kept []Published
	for _, p := range r.evs {
		if matches(p, types) {
			out = append(out, p)
		} else {
			kept = append(kept, p)
		}
	}
	r.evs = kept
	return out
}

// Len counts the recorded events of the given types (all of them when
// none is given) and forgets none: for a test that waits for events.
func (r *Recorder) Len(types ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.evs {
		if matches(p, types) {
			n++
		}
	}
	return n
}

func matches(p Published, types []string) bool {
	return len(types) == 0 || slices.Contains(types, p.Type)
}

// Data returns the data of each event, as a T; it panics if one's data is
// not a T, as a test's type assertion would.
func Data[T any](ps []Published) []T {
	out := make([]T, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Data.(T))
	}
	return out
}
