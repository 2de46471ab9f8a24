package reconcile

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// timelineStore is a Timelined store whose state the test sets.
type timelineStore struct {
	mu       sync.Mutex
	specs    []stream.Spec
	rev, tl  uint64
	changesC chan struct{}
}

func (s *timelineStore) List() ([]stream.Spec, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.specs, s.rev
}

func (s *timelineStore) Changes() <-chan struct{} { return s.changesC }

func (s *timelineStore) Timeline() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tl
}

func (s *timelineStore) set(tl, rev uint64, specs ...stream.Spec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tl, s.rev, s.specs = tl, rev, specs
}

func tcpAt(port int, rev uint64) stream.Spec {
	return stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{"a:1"}, Revision: rev}
}

// After the store's revisions start again lower (an operator confirmed
// etcd restored from an older backup), a revision applied before does not
// answer for the new ones: a write of the new timeline waits for a pass
// of it, and the node reports no applied revision until then.
func TestWaitAppliedWaitsForAPassOfTheNewTimeline(t *testing.T) {
	h := newHarness(t)
	st := &timelineStore{changesC: make(chan struct{}, 1)}
	st.set(0, 500, tcpAt(9000, 500))
	h.rec.store = st
	h.mustPass("test", "start")
	done, cancel := context.WithCancel(context.Background())
	cancel() // WaitApplied answers at once: applied, or the context's error
	if err := h.rec.WaitApplied(done, 500); err != nil {
		t.Fatalf("revision 500 after its pass: %v", err)
	}

	st.set(1, 310, tcpAt(9000, 300), tcpAt(9001, 310))
	if err := h.rec.WaitApplied(done, 310); !errors.Is(err, context.Canceled) {
		t.Fatalf("revision 310 of the new timeline before any pass of it: %v, want it not applied yet", err)
	}
	if got := h.rec.NodeStatus().AppliedRevision; got != 0 {
		t.Fatalf("applied revision before a pass of the new timeline: %d, want 0", got)
	}
	h.mustPass("test", "reload")
	if err := h.rec.WaitApplied(done, 310); err != nil {
		t.Fatalf("revision 310 after a pass of the new timeline: %v", err)
	}
	if st := h.rec.Status(stream.ID{Protocol: stream.TCP, Port: 9001}, 310); st.State != stream.Active {
		t.Fatalf("tcp/9001 after the pass: %s", st.State)
	}
	if got := h.rec.NodeStatus().AppliedRevision; got != 310 {
		t.Fatalf("applied revision after the pass: %d, want 310", got)
	}
}
