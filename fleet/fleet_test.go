package fleet

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// fakeLocal is this node's reconciler: every stream active at applied
// but those in failed.
type fakeLocal struct {
	mu      sync.Mutex
	applied uint64
	failed  map[stream.ID]string
	busy    bool
}

func (l *fakeLocal) WaitApplied(ctx context.Context, rev uint64, _ []stream.Spec) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.applied < rev {
		return context.DeadlineExceeded
	}
	return nil
}

func (l *fakeLocal) Status(id stream.ID, rev uint64) stream.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.applied < rev {
		return stream.Status{State: stream.Pending, Revision: rev}
	}
	if msg, ok := l.failed[id]; ok {
		return stream.Status{State: stream.Failed, Revision: rev, Error: msg}
	}
	return stream.Status{State: stream.Active, Revision: rev}
}

func (l *fakeLocal) NodeStatus() stream.NodeStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return stream.NodeStatus{AppliedRevision: l.applied}
}

func (l *fakeLocal) BindConflict(s stream.Spec) error {
	if l.busy {
		return errors.New("bind() failed (98: Address already in use)")
	}
	return nil
}

func (l *fakeLocal) Leftover(stream.ID) error { return nil }

// fakeRegistry is the node registry; set replaces what it holds.
type fakeRegistry struct {
	mu      sync.Mutex
	live    map[string]stream.NodeInfo
	gone    map[string]time.Time
	changed chan struct{}
	gen     uint64
}

func newRegistry(live ...stream.NodeInfo) *fakeRegistry {
	g := &fakeRegistry{changed: make(chan struct{})}
	g.set(live, nil)
	return g
}

func (g *fakeRegistry) set(live []stream.NodeInfo, gone []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live, g.gone = map[string]stream.NodeInfo{}, map[string]time.Time{}
	for _, ni := range live {
		g.live[ni.Name] = ni
	}
	for _, name := range gone {
		g.gone[name] = time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	}
	g.gen++
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *fakeRegistry) Nodes() (map[string]stream.NodeInfo, map[string]time.Time, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.live, g.gone, g.changed
}

func (g *fakeRegistry) Generation() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen
}

var id9000 = stream.ID{Protocol: stream.TCP, Port: 9000}

func peer(name string, applied uint64, failed ...stream.StreamStatus) stream.NodeInfo {
	return stream.NodeInfo{Name: name, AppliedRevision: applied, NotActive: failed}
}

func failedAt(rev uint64, msg string) stream.StreamStatus {
	return stream.StreamStatus{ID: id9000, Status: stream.Status{State: stream.Failed, Revision: rev, Error: msg}}
}

// newFleet is edge-1 with local, in reg, where the stream tcp/9000 at
// revision 6 names nodes.
func newFleet(local *fakeLocal, reg Registry, nodes ...string) (*Fleet, stream.Spec) {
	sp := stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"b:1"}, Revision: 6, Nodes: nodes}
	return New(Config{Self: "edge-1", Local: local, Registry: reg, Lookup: func(id stream.ID) (stream.Spec, bool) {
		return sp, id == id9000
	}}), sp
}

// waitApplied runs WaitApplied in the background; the channel gets its
// error.
func waitApplied(f *Fleet, sp stream.Spec) chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- f.WaitApplied(ctx, sp.Revision, []stream.Spec{sp})
	}()
	return done
}

func mustBlock(t *testing.T, done chan error, why string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("WaitApplied returned (%v) while %s", err, why)
	case <-time.After(50 * time.Millisecond):
	}
}

func mustReturn(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitApplied: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitApplied did not return")
	}
}

// A write is applied once every live node that serves it published its
// revision; a node that leaves is no longer waited for.
func TestWaitAppliedWaitsForEveryLiveNode(t *testing.T) {
	reg := newRegistry(peer("edge-2", 5), peer("edge-3", 5))
	f, sp := newFleet(&fakeLocal{applied: 6}, reg)
	done := waitApplied(f, sp)
	mustBlock(t, done, "edge-2 and edge-3 are at 5")
	reg.set([]stream.NodeInfo{peer("edge-2", 6), peer("edge-3", 5)}, nil)
	mustBlock(t, done, "edge-3 is at 5")
	reg.set([]stream.NodeInfo{peer("edge-2", 6)}, []string{"edge-3"})
	mustReturn(t, done)
}

// After an operator's confirmation, revisions may start lower: a peer's
// applied revision of another epoch (it has not taken on the confirmation
// yet) does not count, however high; once it publishes this node's epoch
// it does.
func TestWaitAppliedComparesRevisionsWithinOneEpoch(t *testing.T) {
	old := peer("edge-2", 900) // applied far past 6, before the confirmation
	reg := newRegistry(old)
	f, sp := newFleet(&fakeLocal{applied: 6}, reg)
	f.cfg.Epoch = func() uint64 { return 42 }
	done := waitApplied(f, sp)
	mustBlock(t, done, "edge-2's revision 900 is of the epoch before the confirmation")
	if st := f.peerState("edge-2", old, sp); st.State != stream.Pending {
		t.Fatalf("edge-2 of another epoch shows %s, want pending", st.State)
	}
	confirmed := peer("edge-2", 6)
	confirmed.Epoch = 42
	reg.set([]stream.NodeInfo{confirmed}, nil)
	mustReturn(t, done)
}

// A node the stream does not name is not waited for.
func TestWaitAppliedSkipsNodesNotServingTheStream(t *testing.T) {
	reg := newRegistry(peer("edge-2", 5), peer("edge-3", 5))
	f, sp := newFleet(&fakeLocal{applied: 6}, reg, "edge-1", "edge-2")
	done := waitApplied(f, sp)
	mustBlock(t, done, "edge-2 is at 5")
	reg.set([]stream.NodeInfo{peer("edge-2", 6), peer("edge-3", 5)}, nil)
	mustReturn(t, done)
}

// A wait that times out names the nodes that did not apply, and Lagging
// says the same with their revisions.
func TestWaitAppliedTimeoutNamesTheLaggingNodes(t *testing.T) {
	reg := newRegistry(peer("edge-2", 6), peer("edge-3", 4))
	f, sp := newFleet(&fakeLocal{applied: 6}, reg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := f.WaitApplied(ctx, 6, []stream.Spec{sp})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not applied by edge-3") || strings.Contains(err.Error(), "edge-2") {
		t.Fatalf("WaitApplied: %v", err)
	}
	if got := f.Lagging(6, []stream.Spec{sp}); len(got) != 1 || got[0] != "edge-3 (applied revision 4)" {
		t.Fatalf("Lagging = %q", got)
	}
}

// A write is refused (and undone by the write path) only when every live
// node that serves it refused it; refused on one node of two, it stays.
func TestRefusedOnlyWhenEveryLiveNodeRefused(t *testing.T) {
	local := &fakeLocal{applied: 6, failed: map[stream.ID]string{id9000: "bind() to 127.0.0.11:9000 failed"}}
	reg := newRegistry(peer("edge-2", 6))
	f, _ := newFleet(local, reg)
	if why, refused := f.Refused(id9000, 6); refused {
		t.Fatalf("refused on edge-1 only, Refused = %q, true", why)
	}
	reg.set([]stream.NodeInfo{peer("edge-2", 6, failedAt(6, "bind() to 127.0.0.12:9000 failed"))}, []string{"edge-3"})
	why, refused := f.Refused(id9000, 6)
	if !refused || !strings.Contains(why, "edge-1: bind() to 127.0.0.11:9000 failed") || !strings.Contains(why, "edge-2: bind() to 127.0.0.12:9000 failed") {
		t.Fatalf("refused on both live nodes: Refused = %q, %v", why, refused)
	}
	// A failure at another revision is not this one's.
	reg.set([]stream.NodeInfo{peer("edge-2", 6, failedAt(5, "old"))}, nil)
	if _, refused := f.Refused(id9000, 6); refused {
		t.Fatal("a failure published for revision 5 refused revision 6")
	}
}

// The status across the fleet: failed with the failing node's message
// when one live node failed, pending while one has not applied, and each
// node's state, a gone one included.
func TestOfShowsEachNode(t *testing.T) {
	reg := newRegistry(peer("edge-2", 6, failedAt(6, "bind() to 127.0.0.12:9000 failed (98: Address already in use)")), peer("edge-3", 6))
	f, sp := newFleet(&fakeLocal{applied: 6}, reg)
	v := f.Of(sp)
	if v.State != stream.Failed || v.Summary != "active on 2 of 3 nodes" || v.Error != "edge-2: bind() to 127.0.0.12:9000 failed (98: Address already in use)" {
		t.Fatalf("Of = %+v", v)
	}
	want := []stream.OnNode{{Node: "edge-1", State: stream.Active, AppliedRevision: 6},
		{Node: "edge-2", State: stream.Failed, AppliedRevision: 6, Error: "bind() to 127.0.0.12:9000 failed (98: Address already in use)"},
		{Node: "edge-3", State: stream.Active, AppliedRevision: 6}}
	if len(v.OnNodes) != 3 || v.OnNodes[0] != want[0] || v.OnNodes[1] != want[1] || v.OnNodes[2] != want[2] {
		t.Fatalf("on_nodes = %+v", v.OnNodes)
	}

	reg.set([]stream.NodeInfo{peer("edge-2", 5)}, []string{"edge-3"})
	v = f.Of(sp)
	if v.State != stream.Pending || v.Summary != "active on 1 of 2 nodes; gone: edge-3" || v.OnNodes[2].State != stream.Gone ||
		!strings.Contains(v.OnNodes[2].Error, "left the fleet") {
		t.Fatalf("edge-2 behind, edge-3 gone: Of = %+v", v)
	}
	reg.set([]stream.NodeInfo{peer("edge-2", 6)}, []string{"edge-3"})
	if v = f.Of(sp); v.State != stream.Active || v.Summary != "active on 2 of 2 nodes; gone: edge-3" {
		t.Fatalf("edge-3 gone, the others active: Of = %+v", v)
	}
}

// A stream of a node that is not live is stored but not served: pending,
// says so, and is not waited for.
func TestStreamOfNoLiveNode(t *testing.T) {
	reg := newRegistry(peer("edge-2", 5))
	f, sp := newFleet(&fakeLocal{applied: 6}, reg, "edge-9")
	v := f.Of(sp)
	if v.State != stream.Pending || !strings.Contains(v.Error, "not served") || v.Summary != "active on 0 of 0 nodes; gone: edge-9" ||
		len(v.OnNodes) != 1 || v.OnNodes[0].State != stream.Gone {
		t.Fatalf("Of = %+v", v)
	}
	mustReturn(t, waitApplied(f, sp))
	if _, refused := f.Refused(id9000, 6); refused {
		t.Fatal("a stream no live node serves is refused")
	}
}

// On a single node (no registry) the status is the reconciler's, without
// per-node detail; a stream of other nodes only is pending and says it is
// not served here, and its port is not checked here.
func TestSingleNode(t *testing.T) {
	local := &fakeLocal{applied: 6, busy: true}
	f, sp := newFleet(local, nil)
	if v := f.Of(sp); v.State != stream.Active || v.OnNodes != nil || v.Summary != "" {
		t.Fatalf("Of = %+v", v)
	}
	if f.BindConflict(sp) == nil {
		t.Fatal("a busy port of a stream served here is not a conflict")
	}
	f, sp = newFleet(local, nil, "edge-2")
	v := f.Of(sp)
	if v.State != stream.Pending || v.Error != "stored but not served: no live node of edge-2 (this node is edge-1)" || v.OnNodes != nil {
		t.Fatalf("a stream of edge-2 on edge-1 alone: Of = %+v", v)
	}
	if err := f.BindConflict(sp); err != nil {
		t.Fatalf("a stream not served here: BindConflict = %v", err)
	}
	mustReturn(t, waitApplied(f, sp))
}
