package eventstest

import (
	"slices"
	"sync"
	"testing"
)

// Take hands back, in order, the events of the types asked for (all when
// none) and forgets only those; Len counts without forgetting.
func TestRecorderTakeAndLen(t *testing.T) {
	var r Recorder
	if ev := r.Publish("a", 1); ev.Type != "a" {
		t.Fatalf("Publish returned %+v, want type a", ev)
	}
	r.Publish("b", 2)
	r.Publish("a", 3)
	if n, na := r.Len(), r.Len("a"); n != 3 || na != 2 {
		t.Fatalf("Len() = %d, Len(a) = %d; want 3 and 2", n, na)
	}
	if got := Data[int](r.Take("a")); !slices.Equal(got, []int{1, 3}) {
		t.Fatalf("Take(a) data %v, want [1 3]", got)
	}
	if got := r.Take("a"); len(got) != 0 {
		t.Fatalf("Take(a) again: %v, want none", got)
	}
	if got := r.Take(); !slices.Equal(got, []Published{{Type: "b", Data: 2}}) {
		t.Fatalf("Take() = %v, want b alone", got)
	}
	if n := r.Len(); n != 0 {
		t.Fatalf("Len() after Take() = %d", n)
	}
}

// Publish may be called from many goroutines at once (run with -race).
func TestRecorderConcurrentPublish(t *testing.T) {
	var r Recorder
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			r.Publish("x", i)
			r.Len("x")
		})
	}
	wg.Wait()
	if got := r.Take("x"); len(got) != 8 {
		t.Fatalf("%d events recorded, want 8", len(got))
	}
}
