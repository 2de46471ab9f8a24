package events

import (
	"runtime"
	"testing"
	"time"
)

func ids(evs []Event) []uint64 {
	var out []uint64
	for _, ev := range evs {
		out = append(out, ev.ID)
	}
	return out
}

func receive(t *testing.T, s *Sub, n int) []Event {
	t.Helper()
	var got []Event
	deadline := time.After(2 * time.Second)
	for len(got) < n {
		select {
		case ev, ok := <-s.C:
			if !ok {
				t.Fatalf("closed after %d events: %s", len(got), s.Reason())
			}
			got = append(got, ev)
		case <-deadline:
			t.Fatalf("%d of %d events", len(got), n)
		}
	}
	return got
}

func TestSubscribersGetEventsInOrderWithTheirData(t *testing.T) {
	b := newBus(10, 1)
	s, missed, reset := b.Subscribe(nil, nil, 8)
	defer s.Close()
	if missed != nil || reset {
		t.Fatalf("a new subscriber without Last-Event-ID got %v, reset %v", missed, reset)
	}
	b.Publish("stream.created", map[string]any{"id": "tcp/9000"})
	b.Publish("reload", map[string]any{"shard": 3})
	got := receive(t, s, 2)
	if got[0].ID != 1 || got[1].ID != 2 || got[0].Type != "stream.created" || string(got[0].Data) != `{"id":"tcp/9000"}` {
		t.Fatalf("events %+v", got)
	}
}

func TestTypesFilter(t *testing.T) {
	b := newBus(10, 1)
	s, _, _ := b.Subscribe(nil, []string{"reload"}, 8)
	defer s.Close()
	b.Publish("stream.created", nil)
	b.Publish("reload", nil)
	if got := receive(t, s, 1); got[0].Type != "reload" || got[0].ID != 2 {
		t.Fatalf("filtered subscriber got %+v", got)
	}
}

// A client that reconnects with Last-Event-ID gets what it missed while
// the window still holds it, and a reset once it does not.
func TestResumeFromTheWindowOrReset(t *testing.T) {
	b := newBus(3, 1)
	for range 5 {
		b.Publish("x", nil)
	} // ids 1-5, the window holds 3-5
	after := uint64(3)
	s, missed, reset := b.Subscribe(&after, nil, 8)
	s.Close()
	if reset || len(missed) != 2 || missed[0].ID != 4 || missed[1].ID != 5 {
		t.Fatalf("resume after 3: %v, reset %v", ids(missed), reset)
	}
	after = 1
	s, missed, reset = b.Subscribe(&after, nil, 8)
	s.Close()
	if !reset || len(missed) != 3 {
		t.Fatalf("resume after 1 (2 is gone): %v, reset %v", ids(missed), reset)
	}
	after = 5
	if s, missed, reset = b.Subscribe(&after, nil, 8); reset || len(missed) != 0 {
		t.Fatalf("resume after the last: %v, reset %v", ids(missed), reset)
	}
	s.Close()
	after = 99 // from before a restart
	if s, _, reset = b.Subscribe(&after, nil, 8); !reset {
		t.Fatal("an id this bus never gave is not a reset")
	}
	s.Close()
}

// A subscriber that never reads is dropped with a reason once its buffer
// is full; publishing never waits for it, and nothing grows.
func TestSlowSubscriberIsDroppedWithoutBlocking(t *testing.T) {
	b := newBus(100, 1)
	s, _, _ := b.Subscribe(nil, nil, 4)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100000 {
			b.Publish("x", map[string]int{"n": 1})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a subscriber that does not read")
	}
	n := 0
	for range s.C {
		n++
	}
	if n != 4 || s.Reason() != ErrSlow || b.Subscribers() != 0 {
		t.Fatalf("slow subscriber: %d events buffered, reason %q, %d subscribers left", n, s.Reason(), b.Subscribers())
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 1<<20 {
		t.Fatalf("heap grew by %d bytes over 100,000 events with a window of 100", grown)
	}
}

func TestHundredWatchers(t *testing.T) {
	b := newBus(10, 1)
	subs := make([]*Sub, 100)
	for i := range subs {
		subs[i], _, _ = b.Subscribe(nil, nil, 16)
	}
	for range 10 {
		b.Publish("x", nil)
	}
	for _, s := range subs {
		if got := receive(t, s, 10); got[9].ID != 10 {
			t.Fatalf("a watcher got %v", ids(got))
		}
		s.Close()
	}
	if b.Subscribers() != 0 {
		t.Fatalf("%d subscribers after every one closed", b.Subscribers())
	}
}

// An id from an earlier run of the daemon is older than every id of this
// run, so a client resuming from it is told to list again instead of
// getting this run's events as if they followed it.
func TestIDFromAnEarlierRunResets(t *testing.T) {
	earlier := newBus(10, uint64(time.Now().Add(-time.Second).UnixMicro())) // a run a second ago
	for range 3 {
		earlier.Publish(StreamCreated, nil)
	}
	last := earlier.Publish(StreamDeleted, nil).ID
	now := New(10)
	for range 5 {
		now.Publish(Reload, nil)
	}
	s, missed, reset := now.Subscribe(&last, nil, 4)
	defer s.Close()
	if !reset || len(missed) != 5 {
		t.Fatalf("resuming from %d of an earlier run: reset %v, %d events; want a reset and the 5 this run kept", last, reset, len(missed))
	}
	if missed[0].ID <= last {
		t.Fatalf("this run's first id %d is not after the earlier run's last %d", missed[0].ID, last)
	}
}

// BenchmarkPublish100Subscribers is the cost of one event for a node with
// 100 clients on GET /v1/events, each read by its own goroutine.
func BenchmarkPublish100Subscribers(b *testing.B) {
	bus := New(1024)
	for range 100 {
		s, _, _ := bus.Subscribe(nil, nil, 256)
		go func() {
			for range s.C {
			}
		}()
		defer s.Close()
	}
	data := StatusChange{State: "active", Revision: 7}
	b.ReportAllocs()
	for b.Loop() {
		bus.Publish(StreamStatus, data)
	}
	// A publisher at full speed outruns readers on 2 cores: the ones
	// that fall 256 events behind are dropped, and cost nothing after.
	b.ReportMetric(float64(bus.Stats().Dropped), "dropped")
}
