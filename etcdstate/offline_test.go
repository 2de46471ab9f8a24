package etcdstate

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/internal/etcdtest"
	"github.com/streamconductor/stream-conductor/stream"
)

// ownServer is an etcd server of the test alone (it is stopped and
// started again) and a client of it.
func ownServer(t *testing.T) (*etcdtest.Server, *clientv3.Client) {
	t.Helper()
	needEtcd(t)
	srv, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv, clientOf(t, srv)
}

func clientOf(t *testing.T, srv *etcdtest.Server) *clientv3.Client {
	t.Helper()
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// fast are the options of a node that notices quickly.
func fast(cache string) Options {
	return Options{CachePath: cache, Timeout: time.Second, CheckInterval: 50 * time.Millisecond}
}

// within polls cond every 20ms for up to 15s.
func within(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ports(list []stream.Spec) []int {
	out := make([]int, 0, len(list))
	for _, sp := range list {
		out = append(out, sp.Listen)
	}
	slices.Sort(out)
	return out
}

func mustPutAll(t *testing.T, st *State, ps ...int) {
	t.Helper()
	for _, p := range ps {
		if _, _, err := st.Put(spec(p, "10.0.0.1:1"), desired.Match{}); err != nil {
			t.Fatal(err)
		}
	}
}

// localPorts is what the node's local copy holds.
func localPorts(st *State) []int {
	l, _ := st.localList()
	return ports(l)
}

// While etcd does not answer, reads come from the local copy and say so,
// writes and Check fail at once with the reason; once it answers again,
// writes pass and the watch goes on.
func TestEtcdDownReadsStaleWritesRefused(t *testing.T) {
	srv, cli := ownServer(t)
	st := openState(t, cli, "/p", fast(filepath.Join(t.TempDir(), "cache.db")))
	mustPutAll(t, st, 9000, 9001)
	srv.Stop()
	within(t, "the node sees etcd down", func() bool { return st.Condition().Stale != nil })
	if l, rev := st.List(); !slices.Equal(ports(l), []int{9000, 9001}) || rev == 0 {
		t.Fatalf("list while etcd is down: %v at %d, want 9000 and 9001", ports(l), rev)
	}
	if sp, err := st.Get(tcp(9001)); err != nil || sp.Listen != 9001 {
		t.Fatalf("get while etcd is down: %+v, %v", sp, err)
	}
	start := time.Now()
	_, _, err := st.Put(spec(9002, "10.0.0.1:1"), desired.Match{})
	if !errors.Is(err, desired.ErrUnavailable) || !strings.Contains(err.Error(), "etcd unreachable since") {
		t.Fatalf("put while etcd is down: %v, want ErrUnavailable saying since when", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("the refused put took %s", took)
	}
	if err := st.Check(); !errors.Is(err, desired.ErrUnavailable) {
		t.Fatalf("check while etcd is down: %v", err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	within(t, "the node sees etcd back", func() bool { return st.Condition().Stale == nil })
	mustPutAll(t, st, 9002)
	other := openState(t, clientOf(t, srv), "/p", Options{})
	mustPutAll(t, other, 9003)
	within(t, "the watch delivers another node's write", func() bool {
		return slices.Equal(localPorts(st), []int{9000, 9001, 9002, 9003})
	})
	if err := st.Check(); err != nil {
		t.Fatal(err)
	}
}

// A node restarted while etcd does not answer opens from its file: the
// streams it last saw, stale; without a file it refuses to open. Once
// etcd answers, it catches up from the revision it had.
func TestOpenFromCacheWhileEtcdDown(t *testing.T) {
	srv, cli := ownServer(t)
	cache := filepath.Join(t.TempDir(), "cache.db")
	first, err := Open(cli, "/p", fast(cache))
	if err != nil {
		t.Fatal(err)
	}
	mustPutAll(t, first, 9000, 9001)
	within(t, "the watch delivers the writes", func() bool { return slices.Equal(localPorts(first), []int{9000, 9001}) })
	first.Close()
	srv.Stop()
	if _, err := Open(cli, "/p", fast("")); !errors.Is(err, desired.ErrUnavailable) {
		t.Fatalf("open without a local copy while etcd is down: %v, want ErrUnavailable", err)
	}
	st := openState(t, cli, "/p", fast(cache))
	if c := st.Condition(); c.Stale == nil {
		t.Fatalf("opened from the copy, condition %+v, want stale", c)
	}
	if l, _ := st.List(); !slices.Equal(ports(l), []int{9000, 9001}) {
		t.Fatalf("list after opening from the copy: %v", ports(l))
	}
	_, rev0 := st.List()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	other := openState(t, clientOf(t, srv), "/p", Options{})
	mustPutAll(t, other, 9002)
	within(t, "the node catches up", func() bool { return slices.Equal(localPorts(st), []int{9000, 9001, 9002}) })
	if ch, err := st.Since(rev0); err != nil || len(ch) != 1 || ch[0].ID != tcp(9002) {
		t.Fatalf("since the cached revision: %+v, %v; want the one write made since", ch, err)
	}
}

// A node whose cached revision etcd compacted meanwhile reads the state
// again: consumers are told to list again (ErrCompacted).
func TestReconnectAfterCompactionRelists(t *testing.T) {
	srv, cli := ownServer(t)
	cache := filepath.Join(t.TempDir(), "cache.db")
	first, err := Open(cli, "/p", fast(cache))
	if err != nil {
		t.Fatal(err)
	}
	mustPutAll(t, first, 9000)
	_, rev0 := first.List()
	within(t, "the watch delivers the write", func() bool { return slices.Equal(localPorts(first), []int{9000}) })
	first.Close()
	other := openState(t, clientOf(t, srv), "/p", Options{})
	mustPutAll(t, other, 9001, 9002)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	st := openState(t, cli, "/p", fast(cache))
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	within(t, "the node reads the state again", func() bool { return slices.Equal(localPorts(st), []int{9000, 9001, 9002}) })
	if _, err := st.Since(rev0); !errors.Is(err, desired.ErrCompacted) {
		t.Fatalf("since the cached revision after a re-list: %v, want ErrCompacted", err)
	}
	if st.Condition().Alarm != nil {
		t.Fatalf("alarm after a compaction: %+v", st.Condition().Alarm)
	}
}

// etcd restored from an older copy of its data: every node holds what it
// has, refuses writes, and says why; one confirmation on one node makes
// both take etcd's state.
func TestRevisionBackwardsHoldsUntilConfirmed(t *testing.T) {
	srv, cli := ownServer(t)
	a := openState(t, cli, "/p", fast(filepath.Join(t.TempDir(), "a.db")))
	b := openState(t, clientOf(t, srv), "/p", fast(filepath.Join(t.TempDir(), "b.db")))
	mustPutAll(t, a, 9000, 9001, 9002)
	srv.Stop()
	backup := filepath.Join(t.TempDir(), "backup")
	if err := srv.CopyData(backup); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	within(t, "etcd answers", func() bool { return a.Check() == nil })
	mustPutAll(t, a, 9003, 9004)
	for _, p := range []int{9000, 9001} {
		if _, _, err := a.Delete(tcp(p), desired.Match{}); err != nil {
			t.Fatal(err)
		}
	}
	want := []int{9002, 9003, 9004}
	within(t, "b has the later state", func() bool { return slices.Equal(localPorts(b), want) })
	srv.Stop()
	if err := srv.ReplaceData(backup); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	for name, st := range map[string]*State{"a": a, "b": b} {
		within(t, name+" holds", func() bool { return st.Condition().Alarm != nil })
		al := st.Condition().Alarm
		if al.Reason != ReasonBackwards || al.StoreRevision >= al.NodeRevision || al.Deletes != 2 || al.NodeClusterID == "" {
			t.Fatalf("%s's alarm: %+v", name, al)
		}
		if l, _ := st.List(); !slices.Equal(ports(l), want) {
			t.Fatalf("%s lists %v while held, want its copy %v", name, ports(l), want)
		}
		if _, _, err := st.Put(spec(9005, "10.0.0.1:1"), desired.Match{}); !errors.Is(err, desired.ErrHeld) {
			t.Fatalf("%s: put while held: %v, want ErrHeld", name, err)
		}
		if err := st.Check(); !errors.Is(err, desired.ErrHeld) {
			t.Fatalf("%s: check while held: %v", name, err)
		}
	}
	_, heldRev := b.List()
	if a.Epoch() != 0 || b.Epoch() != 0 {
		t.Fatalf("epochs before any confirmation: %d, %d", a.Epoch(), b.Epoch())
	}
	if _, err := a.Confirm(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	restored := []int{9000, 9001, 9002}
	for name, st := range map[string]*State{"a": a, "b": b} {
		within(t, name+" takes etcd's state", func() bool {
			return st.Condition().Alarm == nil && slices.Equal(localPorts(st), restored)
		})
		within(t, name+" takes the confirmation's epoch", func() bool { return st.Epoch() != 0 })
		if l, _ := st.List(); !slices.Equal(ports(l), restored) {
			t.Fatalf("%s lists %v after the confirmation, want %v", name, ports(l), restored)
		}
	}
	if _, err := b.Since(heldRev); !errors.Is(err, desired.ErrCompacted) {
		t.Fatalf("since a revision of the held copy: %v, want ErrCompacted (list again)", err)
	}
	put, _, err := b.Put(spec(9005, "10.0.0.1:1"), desired.Match{})
	if err != nil {
		t.Fatalf("put after the confirmation: %v", err)
	}
	if ch, err := b.Since(put.Revision - 1); err != nil || len(ch) != 1 {
		t.Fatalf("the write after the confirmation in the changes: %+v, %v", ch, err)
	}
	within(t, "a sees the write made on b", func() bool { return slices.Equal(localPorts(a), []int{9000, 9001, 9002, 9005}) })
	if a.Epoch() != b.Epoch() {
		t.Fatalf("the two nodes are in epochs %d and %d after one confirmation", a.Epoch(), b.Epoch())
	}
}

// A node pointed at another etcd cluster than its copy came from holds
// at open, until confirmed.
func TestOtherClusterHolds(t *testing.T) {
	_, cliA := ownServer(t)
	_, cliB := ownServer(t)
	cache := filepath.Join(t.TempDir(), "cache.db")
	first, err := Open(cliA, "/p", fast(cache))
	if err != nil {
		t.Fatal(err)
	}
	mustPutAll(t, first, 9000, 9001)
	within(t, "the watch delivers the writes", func() bool { return slices.Equal(localPorts(first), []int{9000, 9001}) })
	first.Close()
	st := openState(t, cliB, "/p", fast(cache))
	al := st.Condition().Alarm
	if al == nil || al.Reason != ReasonCluster || al.NodeClusterID == al.StoreClusterID || al.Deletes != 2 {
		t.Fatalf("alarm on another cluster: %+v", al)
	}
	if l, _ := st.List(); !slices.Equal(ports(l), []int{9000, 9001}) {
		t.Fatalf("list while held: %v", ports(l))
	}
	if _, err := st.Confirm(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	if l, _ := st.List(); len(l) != 0 || st.Condition().Alarm != nil {
		t.Fatalf("after the confirmation: %v, %+v; want the other cluster's empty state", ports(l), st.Condition().Alarm)
	}
}

// One etcd revision that deletes most streams and did not come through
// this API (no marker rewrite) holds; through the API (an import with
// prune) it is applied at once.
func TestMassDeletionOutsideTheAPIHolds(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	st := openState(t, sharedClient, prefix, fast(filepath.Join(t.TempDir(), "cache.db")))
	mustPutAll(t, st, 9000, 9001, 9002, 9003)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var dels []clientv3.Op
	for _, p := range []int{9000, 9001, 9002} {
		dels = append(dels, clientv3.OpDelete(st.key(tcp(p))))
	}
	if _, err := sharedClient.Txn(ctx).Then(dels...).Commit(); err != nil {
		t.Fatal(err)
	}
	within(t, "the node holds", func() bool { return st.Condition().Alarm != nil })
	if al := st.Condition().Alarm; al.Reason != ReasonMassDeletion || al.Deletes != 3 {
		t.Fatalf("alarm: %+v", al)
	}
	if l, _ := st.List(); !slices.Equal(ports(l), []int{9000, 9001, 9002, 9003}) {
		t.Fatalf("list while held: %v", ports(l))
	}
	if _, err := st.Confirm(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	if l, _ := st.List(); !slices.Equal(ports(l), []int{9003}) || st.Condition().Alarm != nil {
		t.Fatalf("after the confirmation: %v, %+v", ports(l), st.Condition().Alarm)
	}
	mustPutAll(t, st, 9004, 9005, 9006)
	if _, err := st.Import([]stream.Spec{spec(9007, "10.0.0.1:1")}, true); err != nil {
		t.Fatal(err)
	}
	within(t, "the import applies", func() bool { return slices.Equal(localPorts(st), []int{9007}) })
	if l, _ := st.List(); !slices.Equal(ports(l), []int{9007}) || st.Condition().Alarm != nil {
		t.Fatalf("after a pruning import: %v, alarm %+v", ports(l), st.Condition().Alarm)
	}
}

// A node that was stopped while changes were made opens from its copy and
// replays them from its revision, vetted as if it had watched: a mass
// deletion made outside the API holds, one made through it (an import
// with prune) is applied; past a compaction, a re-list that lacks most of
// its streams holds too.
func TestReopenedNodeVetsChangesMadeWhileAway(t *testing.T) {
	srv, cli := ownServer(t)
	cache := filepath.Join(t.TempDir(), "cache.db")
	other := openState(t, clientOf(t, srv), "/p", fast(""))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	away := func(want []int, meanwhile func()) *State {
		t.Helper()
		st, err := Open(cli, "/p", fast(cache))
		if err != nil {
			t.Fatal(err)
		}
		within(t, "the node has the state", func() bool { return slices.Equal(localPorts(st), want) })
		st.Close()
		meanwhile()
		return openState(t, cli, "/p", fast(cache))
	}
	rawDelete := func(ps ...int) {
		var ops []clientv3.Op
		for _, p := range ps {
			ops = append(ops, clientv3.OpDelete("/p/streams/tcp/"+strconv.Itoa(p)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	mustPutAll(t, other, 9000, 9001, 9002, 9003)
	st := away([]int{9000, 9001, 9002, 9003}, func() { rawDelete(9000, 9001, 9002) })
	within(t, "the reopened node holds", func() bool { return st.Condition().Alarm != nil })
	if al := st.Condition().Alarm; al.Reason != ReasonMassDeletion || al.Deletes != 3 || !slices.Equal(localPorts(st), []int{9000, 9001, 9002, 9003}) {
		t.Fatalf("alarm %+v, copy %v", al, localPorts(st))
	}
	if _, err := st.Confirm(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	within(t, "the other node applies the confirmation", func() bool { return other.Condition().Alarm == nil })

	mustPutAll(t, other, 9004, 9005, 9006)
	st = away([]int{9003, 9004, 9005, 9006}, func() {
		if _, err := other.Import([]stream.Spec{spec(9003, "10.0.0.1:1")}, true); err != nil {
			t.Fatal(err)
		}
	})
	within(t, "the pruning import applies", func() bool { return slices.Equal(localPorts(st), []int{9003}) })
	if al := st.Condition().Alarm; al != nil {
		t.Fatalf("alarm after an import through the API: %+v", al)
	}
	st.Close()

	mustPutAll(t, other, 9004, 9005, 9006)
	st = away([]int{9003, 9004, 9005, 9006}, func() {
		other.Close()
		rawDelete(9004)
		rawDelete(9005)
		rawDelete(9006)
		resp, err := cli.Get(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	})
	within(t, "the node holds after re-listing past a compaction", func() bool { return st.Condition().Alarm != nil })
	if al := st.Condition().Alarm; al.Reason != ReasonMassDeletion || al.Deletes != 3 || !strings.Contains(al.Message, "compacted") {
		t.Fatalf("alarm %+v", al)
	}
	if l, _ := st.List(); !slices.Equal(ports(l), []int{9003, 9004, 9005, 9006}) {
		t.Fatalf("list while held: %v", ports(l))
	}
}
