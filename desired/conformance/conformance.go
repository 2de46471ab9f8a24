// Package conformance is the test suite every implementation of
// desired.State passes: revision ordering, preconditions, atomic
// allocation under concurrent allocators, changes delivered in order
// without loss, imports that are all or nothing, lists and backups that
// are each one revision of the state, and an audit log paged newest first
// that keeps its retention.
package conformance

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// Options are what the suite asks of an implementation it opens.
type Options struct {
	// AuditRetention is how many audit records it keeps (0: its
	// default, at least 1,000).
	AuditRetention int
}

// Impl is an implementation under test.
type Impl struct {
	// Open returns a new, empty state for one test; it cleans up after
	// itself with t.Cleanup.
	Open func(t *testing.T, o Options) desired.State
	// Restore returns a state restored from the bytes of a backup.
	Restore func(t *testing.T, backup []byte) desired.State
}

// Run runs every case of the suite against impl, each as a subtest.
func Run(t *testing.T, impl Impl) {
	cases := []struct {
		name string
		fn   func(t *testing.T, st desired.State)
	}{
		{"RevisionsGrowWithEveryWrite", revisionsGrow},
		{"Preconditions", preconditions},
		{"FailedWritesTakeNoRevision", failedWritesTakeNoRevision},
		{"ConcurrentAllocatorsGetDistinctPorts", concurrentAllocation},
		{"AllocateSkipsBusyPorts", allocateSkipsBusy},
		{"ChangesInOrderWithoutLoss", changesInOrder},
		{"WatcherSeesEveryChange", watcherSeesEveryChange},
		{"DeleteManyInOneRevision", deleteManyInOneRevision},
		{"DeleteManyOfNothingTakesNoRevision", deleteManyOfNothing},
		{"ImportAllOrNothing", importAllOrNothing},
		{"ImportNeverSeenHalfDone", importNeverHalfDone},
		{"ImportOfNothingTakesNoRevision", importOfNothing},
		{"ListIsOneRevision", listIsOneRevision},
		{"AuditNewestFirstAndNotDesiredState", auditNewestFirst},
		{"AuditPagesWithACursor", auditPages},
		{"PortRangesDoNotOverlap", portRangesDoNotOverlap},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, impl.Open(t, Options{}))
		})
	}
	t.Run("AuditKeepsItsRetention", func(t *testing.T) {
		t.Parallel()
		auditRetention(t, impl.Open(t, Options{AuditRetention: 5}))
	})
	t.Run("RestoredRangesStillConflict", func(t *testing.T) {
		t.Parallel()
		restoredRangesConflict(t, impl.Open(t, Options{}), impl.Restore)
	})
	t.Run("BackupIsTheStateAtItsRevision", func(t *testing.T) {
		t.Parallel()
		backupAtItsRevision(t, impl.Open(t, Options{}), impl.Restore)
	})
}

// tcp is the id of the TCP stream on port.
func tcp(port int) stream.ID { return stream.ID{Protocol: stream.TCP, Port: port} }

func spec(port int, backend string) stream.Spec {
	return stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{backend}}
}

func mustPut(t *testing.T, st desired.State, sp stream.Spec, m desired.Match) stream.Spec {
	t.Helper()
	stored, _, err := st.Put(sp, m)
	if err != nil {
		t.Fatalf("put %s: %v", sp.ID(), err)
	}
	return stored
}

func revisionsGrow(t *testing.T, st desired.State) {
	_, rev0 := st.List()
	a := mustPut(t, st, spec(9000, "10.0.0.1:1"), desired.Match{})
	if a.Revision <= rev0 {
		t.Fatalf("first write has revision %d, not above the starting %d", a.Revision, rev0)
	}
	b := mustPut(t, st, spec(9001, "10.0.0.1:1"), desired.Match{})
	if b.Revision <= a.Revision {
		t.Fatalf("second write has revision %d, not above %d", b.Revision, a.Revision)
	}
	a2 := mustPut(t, st, spec(9000, "10.0.0.2:1"), desired.Match{})
	if a2.Revision <= b.Revision || !a2.CreatedAt.Equal(a.CreatedAt) {
		t.Fatalf("replace: revision %d (want > %d), created_at %v (want kept %v)", a2.Revision, b.Revision, a2.CreatedAt, a.CreatedAt)
	}
	_, delRev, err := st.Delete(b.ID(), desired.Match{})
	if err != nil || delRev <= a2.Revision {
		t.Fatalf("delete: revision %d, %v; want above %d", delRev, err, a2.Revision)
	}
	list, rev := st.List()
	if rev != delRev {
		t.Fatalf("list revision %d, want the last write's %d", rev, delRev)
	}
	if len(list) != 1 || list[0].ID() != tcp(9000) || list[0].Revision != a2.Revision || list[0].Backends[0] != "10.0.0.2:1" {
		t.Fatalf("list = %+v, want tcp/9000 at revision %d", list, a2.Revision)
	}
	got, err := st.Get(tcp(9000))
	if err != nil || got.Revision != a2.Revision {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if _, err := st.Get(tcp(9001)); !errors.Is(err, desired.ErrNotFound) {
		t.Fatalf("get of a deleted stream: %v, want ErrNotFound", err)
	}
}

func preconditions(t *testing.T, st desired.State) {
	a := mustPut(t, st, spec(9000, "10.0.0.1:1"), desired.Match{Absent: true})
	for _, c := range []struct {
		name string
		err  error
		do   func() error
	}{
		{"create-only on an existing stream", desired.ErrExists, func() error {
			_, _, err := st.Put(spec(9000, "10.0.0.9:1"), desired.Match{Absent: true})
			return err
		}},
		{"If-Match * on a missing stream", desired.ErrNotFound, func() error {
			_, _, err := st.Put(spec(9001, "10.0.0.9:1"), desired.Match{Present: true})
			return err
		}},
		{"an old revision", desired.ErrRevisionMismatch, func() error {
			_, _, err := st.Put(spec(9000, "10.0.0.9:1"), desired.Match{Revision: a.Revision + 100})
			return err
		}},
		{"a revision on a missing stream", desired.ErrNotFound, func() error {
			_, _, err := st.Put(spec(9002, "10.0.0.9:1"), desired.Match{Revision: a.Revision})
			return err
		}},
		{"delete at an old revision", desired.ErrRevisionMismatch, func() error {
			_, _, err := st.Delete(tcp(9000), desired.Match{Revision: a.Revision + 100})
			return err
		}},
		{"delete of a missing stream", desired.ErrNotFound, func() error {
			_, _, err := st.Delete(tcp(9003), desired.Match{})
			return err
		}},
	} {
		if err := c.do(); !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
	if got, _ := st.Get(tcp(9000)); got.Backends[0] != "10.0.0.1:1" || got.Revision != a.Revision {
		t.Fatalf("refused writes changed the stream: %+v", got)
	}
	b := mustPut(t, st, spec(9000, "10.0.0.2:1"), desired.Match{Revision: a.Revision})
	if _, _, err := st.Delete(tcp(9000), desired.Match{Revision: b.Revision}); err != nil {
		t.Fatalf("delete at the current revision: %v", err)
	}
}

func failedWritesTakeNoRevision(t *testing.T, st desired.State) {
	mustPut(t, st, spec(9000, "10.0.0.1:1"), desired.Match{})
	_, before := st.List()
	st.Put(spec(9000, "10.0.0.2:1"), desired.Match{Absent: true})
	st.Delete(tcp(9999), desired.Match{})
	st.Allocate(spec(0, "10.0.0.1:1"), 9000, 9000, nil)
	if _, after := st.List(); after != before {
		t.Fatalf("refused writes moved the revision from %d to %d", before, after)
	}
	changes, err := st.Since(before)
	if err != nil || len(changes) != 0 {
		t.Fatalf("refused writes left changes %+v, %v", changes, err)
	}
}

func concurrentAllocation(t *testing.T, st desired.State) { AllocateConcurrently(t, st) }

// AllocateConcurrently runs 16 allocators over 8 ports, taking turns
// among states (several nodes of one shared state, or one), and fails t
// unless exactly 8 get a port, all distinct, and every state lists 8
// streams.
func AllocateConcurrently(t *testing.T, states ...desired.State) {
	t.Helper()
	const allocators, ports = 16, 8
	var (
		mu   sync.Mutex
		got  []int
		full int
		wg   sync.WaitGroup
	)
	for i := range allocators {
		wg.Go(func() {
			st := states[i%len(states)]
			sp, err := st.Allocate(spec(0, fmt.Sprintf("10.0.0.%d:1", i+1)), 9000, 9000+ports-1, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				got = append(got, sp.Listen)
			case errors.Is(err, desired.ErrNoFreePort):
				full++
			default:
				t.Errorf("allocate on state %d: %v", i%len(states), err)
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	if len(slices.Compact(slices.Clone(got))) != ports || len(got) != ports || full != allocators-ports {
		t.Fatalf("16 allocators on 8 ports got ports %v and %d × no free port; want 8 distinct ports and 8 refusals", got, full)
	}
	for i, st := range states {
		if list, _ := st.List(); len(list) != ports {
			t.Fatalf("state %d lists %d streams, want %d", i, len(list), ports)
		}
	}
}

func allocateSkipsBusy(t *testing.T, st desired.State) {
	mustPut(t, st, spec(9000, "10.0.0.1:1"), desired.Match{})
	sp, err := st.Allocate(spec(0, "10.0.0.2:1"), 9000, 9003, func(port int) bool { return port == 9001 })
	if err != nil || sp.Listen != 9002 {
		t.Fatalf("allocate = port %d, %v; want 9002 (9000 taken, 9001 busy)", sp.Listen, err)
	}
	udp := spec(0, "10.0.0.3:1")
	udp.Protocol = stream.UDP
	if sp, err := st.Allocate(udp, 9000, 9003, nil); err != nil || sp.Listen != 9000 {
		t.Fatalf("udp allocate = port %d, %v; want 9000 (ports are per protocol)", sp.Listen, err)
	}
}

// replay applies changes to a map of id → backend.
func replay(state map[string]string, changes []desired.Change) {
	for _, c := range changes {
		if c.Spec == nil {
			delete(state, c.ID.String())
		} else {
			state[c.ID.String()] = c.Spec.Backends[0]
		}
	}
}

func listed(st desired.State) map[string]string {
	list, _ := st.List()
	m := make(map[string]string, len(list))
	for _, sp := range list {
		m[sp.ID().String()] = sp.Backends[0]
	}
	return m
}

func changesInOrder(t *testing.T, st desired.State) {
	_, start := st.List()
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				port := 9000 + (w*each+i)%40
				if i%5 == 4 {
					st.Delete(tcp(port), desired.Match{})
					continue
				}
				if _, _, err := st.Put(spec(port, fmt.Sprintf("10.0.%d.%d:1", w, i)), desired.Match{}); err != nil {
					t.Errorf("put: %v", err)
				}
			}
		})
	}
	wg.Wait()
	changes, err := st.Since(start)
	if err != nil {
		t.Fatalf("since %d: %v", start, err)
	}
	for i := 1; i < len(changes); i++ {
		if changes[i].Revision < changes[i-1].Revision {
			t.Fatalf("change %d has revision %d after %d: out of order", i, changes[i].Revision, changes[i-1].Revision)
		}
	}
	_, end := st.List()
	if len(changes) == 0 || changes[len(changes)-1].Revision != end {
		t.Fatalf("the last change is not at the list's revision %d", end)
	}
	state := map[string]string{}
	replay(state, changes)
	if want := listed(st); !mapsEqual(state, want) {
		t.Fatalf("replaying %d changes gives %v, the list says %v", len(changes), state, want)
	}
	rest, err := st.Since(end)
	if err != nil || len(rest) != 0 {
		t.Fatalf("since the last revision: %+v, %v; want nothing", rest, err)
	}
}

func watcherSeesEveryChange(t *testing.T, st desired.State) {
	_, start := st.List()
	const writes = 200
	done := make(chan map[string]string)
	go func() {
		state, last := map[string]string{}, start
		deadline := time.After(30 * time.Second)
		for {
			updated := st.Updated()
			changes, err := st.Since(last)
			if err != nil {
				t.Errorf("since %d: %v", last, err)
				done <- state
				return
			}
			replay(state, changes)
			if len(changes) > 0 {
				last = changes[len(changes)-1].Revision
			}
			if _, ok := state["tcp/9999"]; ok { // the writer's last word
				done <- state
				return
			}
			select {
			case <-updated:
			case <-deadline:
				t.Errorf("watcher: no end marker within 30s")
				done <- state
				return
			}
		}
	}()
	for i := range writes {
		port := 9000 + i%20
		if i%7 == 6 {
			st.Delete(tcp(port), desired.Match{})
			continue
		}
		mustPut(t, st, spec(port, fmt.Sprintf("10.0.1.%d:1", i%250+1)), desired.Match{})
	}
	mustPut(t, st, spec(9999, "10.0.0.1:1"), desired.Match{})
	state := <-done
	if want := listed(st); !mapsEqual(state, want) {
		t.Fatalf("the watcher's replay is %v, the list says %v", state, want)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
