package reconcile

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// watchAlone runs the reconciler's watcher without Run, so that the test
// drives passes itself and reads what the watcher marked dirty. It
// returns once the watcher is seen to report an edit.
func (h *harness) watchAlone() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.rec.watch(ctx)
	}()
	h.t.Cleanup(func() { cancel(); <-done })
	h.awaitDirty("stream-udp-1.conf", "# ready\n")
}

// dirtyNow returns what the watcher marked dirty so far, leaving it for
// the next pass.
func (h *harness) dirtyNow() dirty {
	h.rec.dirtyMu.Lock()
	defer h.rec.dirtyMu.Unlock()
	d := dirty{rescan: h.rec.dirty.rescan, names: map[string]bool{}}
	for name := range h.rec.dirty.names {
		d.names[name] = true
	}
	return d
}

// awaitDirty writes body to name by hand and waits until the watcher
// marked it dirty: inotify keeps events in order, so every event of an
// earlier write has been judged by then. name must not have been used
// before.
func (h *harness) awaitDirty(name, body string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		h.write(name, body)
		for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
			if h.dirtyNow().names[name] {
				return
			}
			time.Sleep(time.Millisecond)
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the watcher never saw %s written by hand", name)
		}
	}
}

// A pass's own writes and removals are not taken for changes: the watcher
// marks nothing dirty for them, so no second pass follows.
func TestOwnWritesAreNotChanges(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "a:1")
	h.put(9001, "b:1")
	h.mustPass("test", "start")
	h.watchAlone()
	h.put(9002, "c:1")                                            // a new file
	h.put(9000, "a:2")                                            // a file replaced
	h.store.Delete(stream.MustParseID("tcp/9001"), store.Match{}) // a file removed
	h.mustPass("test", "reload")
	h.awaitDirty("stream-udp-2.conf", "# sentinel\n")
	d := h.dirtyNow()
	for _, name := range []string{"stream-tcp-9000.conf", "stream-tcp-9001.conf", "stream-tcp-9002.conf"} {
		if d.rescan || d.names[name] {
			t.Errorf("the pass's own write of %s was seen as a change: %+v", name, d)
		}
	}
}

// An edit by hand right after a pass wrote the file, before the watcher
// read the pass's event, is seen, and the next pass repairs it.
func TestEditRightAfterOwnWriteIsRepaired(t *testing.T) {
	h := newHarness(t)
	h.rec.repairs = newLimiter(RepairRate{Burst: 100, Per: time.Minute}, time.Now)
	h.put(9000, "a:1")
	h.mustPass("test", "start")
	h.watchAlone()
	for i := range 20 {
		h.put(9000, "a:"+string(rune('2'+i%8)))
		h.mustPass("test", "reload")
		want := h.files()["stream-tcp-9000.conf"]
		h.write("stream-tcp-9000.conf", "# edited by hand\n")
		// A name of its own each time: an old event for a name
		// used before could mark it before the edit is judged.
		h.awaitDirty(fmt.Sprintf("stream-udp-%d.conf", 100+i), "# sentinel\n")
		if d := h.dirtyNow(); !d.names["stream-tcp-9000.conf"] {
			t.Fatalf("try %d: an edit right after our write was not seen: %+v", i, d)
		}
		h.mustPass("test", "reload")
		if got := h.files()["stream-tcp-9000.conf"]; got != want {
			t.Fatalf("try %d: not repaired: %q", i, got)
		}
	}
}

// settledPasses waits until the pass counter stays the same for longer
// than the watcher's settle time plus the reload spacing, and returns it.
func (h *harness) settledPasses() uint64 {
	h.t.Helper()
	const quiet = 3*watchSettle + 3*ReloadSpacing
	deadline := time.Now().Add(10 * time.Second)
	last, since := h.rec.NodeStatus().Counters.Passes, time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			h.t.Fatalf("passes never settled (last %d)", last)
		}
		time.Sleep(10 * time.Millisecond)
		if p := h.rec.NodeStatus().Counters.Passes; p != last {
			last, since = p, time.Now()
		}
	}
	return last
}

// With Run and its watcher, each write costs one pass, not two.
func TestEachWriteCostsOnePass(t *testing.T) {
	h := newHarness(t)
	ctx := h.run(t)
	before := h.settledPasses()
	for i := range 4 {
		sp := h.put(9000+i, "a:1")
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		err := h.rec.WaitApplied(wctx, sp.Revision)
		wcancel()
		if err != nil {
			t.Fatalf("WaitApplied: %v", err)
		}
		if got := h.settledPasses() - before; got != uint64(i+1) {
			t.Fatalf("%d writes took %d passes, want %d", i+1, got, i+1)
		}
	}
}
