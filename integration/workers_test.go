package integration

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// A reply means bytes flow: the master logs "start worker processes"
// before it forks the new workers, and a port only the new configuration
// has is served once one of them finished its initialisation. Here every
// new worker is stopped (SIGSTOP) before it is initialised and held for a
// while; the PUT must not answer before they are let go. A try where a
// worker got through its initialisation before it was caught proves
// nothing and is done again with the next port.
func TestReplyWaitsForANewWorkerThatServes(t *testing.T) {
	t.Parallel()
	requireRoot(t, "to stop nginx's workers, which run as another user")
	const tries = 8
	d := startDaemon(t, tries)
	be := startEcho(t, "W:")
	master := d.nginxPID()
	if master == 0 {
		t.Fatal("no nginx master")
	}
	for i := range tries {
		port := d.portMin + i
		h := holdNewWorkers(master, 300*time.Millisecond)
		d.mustPut("tcp", port, fmt.Sprintf(`{"backend":%q}`, be.addr()))
		answered := time.Now()
		caught, released := h.stop()
		if !caught {
			continue // a worker served before it was caught: try again
		}
		if answered.Before(released) {
			t.Fatalf("the PUT of port %d answered %s before the new workers, held uninitialised, were let go",
				port, released.Sub(answered))
		}
		mustEcho(t, port, "W:")
		return
	}
	t.Fatalf("in %d tries, never caught every new worker before its initialisation", tries)
}

// workerHold stops the master's new children while they still carry the
// master's title (forked, not yet initialised) and lets them go after a
// while.
type workerHold struct {
	done     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	caught   []int
	escaped  bool // a new worker was seen initialised
	released time.Time
}

// holdNewWorkers starts holding the new children of master for hold each.
func holdNewWorkers(master int, hold time.Duration) *workerHold {
	h := &workerHold{done: make(chan struct{})}
	old := procfs.Children(master)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		var first time.Time
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			for _, pid := range procfs.Children(master) {
				if slices.Contains(old, pid) || h.has(pid) {
					continue
				}
				title := procfs.Cmdline(pid)
				if bytes.HasPrefix(title, []byte("nginx: worker process")) {
					h.mu.Lock()
					h.escaped = true
					h.mu.Unlock()
					continue
				}
				if syscall.Kill(pid, syscall.SIGSTOP) == nil {
					h.mu.Lock()
					h.caught = append(h.caught, pid)
					h.mu.Unlock()
					if first.IsZero() {
						first = time.Now()
					}
				}
			}
			if !first.IsZero() && time.Since(first) > hold {
				break
			}
			select {
			case <-h.done:
				return
			default:
			}
			time.Sleep(100 * time.Microsecond)
		}
		h.release()
	}()
	return h
}

func (h *workerHold) has(pid int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.caught, pid)
}

// release lets every caught worker go, once.
func (h *workerHold) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.released.IsZero() {
		return
	}
	h.released = time.Now()
	for _, pid := range h.caught {
		syscall.Kill(pid, syscall.SIGCONT)
	}
}

// stop ends the hold (releasing what it caught) and says whether it caught
// new workers and none escaped it, and when it let them go.
func (h *workerHold) stop() (caught bool, released time.Time) {
	close(h.done)
	h.wg.Wait()
	h.release()
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.caught) > 0 && !h.escaped, h.released
}
