package etcdstate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/internal/etcdtest"
)

// backup stops srv, copies its data aside and starts it again; restore
// stops it and brings that copy back.
func backup(t *testing.T, srv *etcdtest.Server) (restore func()) {
	t.Helper()
	srv.Stop()
	dir := filepath.Join(t.TempDir(), "backup")
	if err := srv.CopyData(dir); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		srv.Stop()
		if err := srv.ReplaceData(dir); err != nil {
			t.Fatal(err)
		}
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
	}
}

// pushPast writes keys outside the state until etcd's revision is above
// rev, and returns it.
func pushPast(t *testing.T, cli *clientv3.Client, rev uint64) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; ; i++ {
		resp, err := cli.Put(ctx, fmt.Sprintf("/elsewhere/%d", i), "x")
		if err != nil {
			t.Fatal(err)
		}
		if uint64(resp.Header.Revision) > rev+2 {
			return resp.Header.Revision
		}
		if i > 1000 {
			t.Fatalf("etcd's revision stays at %d, below %d", resp.Header.Revision, rev)
		}
	}
}

// A held node that is restarted stays held, with the alarm it had, until
// an operator confirms, even when nothing it can see at open would hold
// it again: etcd's revision is above its copy's and the revisions between
// are compacted, and etcd lacks fewer than half of its streams. The
// confirmation ends the hold for good: the next restart is not held.
func TestRestartedHeldNodeStaysHeld(t *testing.T) {
	srv, cli := ownServer(t)
	cache := filepath.Join(t.TempDir(), "cache.db")
	st, err := Open(cli, "/p", fast(cache))
	if err != nil {
		t.Fatal(err)
	}
	mustPutAll(t, st, 9000, 9001, 9002, 9003)
	restore := backup(t, srv)
	within(t, "etcd answers", func() bool { return st.Check() == nil })
	mustPutAll(t, st, 9004, 9005)
	restore()
	within(t, "the node holds", func() bool { return st.Condition().Alarm != nil })
	held := *st.Condition().Alarm
	if held.Reason != ReasonBackwards || held.Deletes != 2 {
		t.Fatalf("alarm %+v, want revision_backwards deleting 2", held)
	}
	st.Close()

	pushPast(t, cli, held.NodeRevision)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}

	st = openState(t, cli, "/p", fast(cache))
	al := st.Condition().Alarm
	if al == nil || al.Reason != held.Reason || !al.Since.Equal(held.Since) || al.Message != held.Message {
		t.Fatalf("alarm after a restart: %+v, want the one it had: %+v", al, held)
	}
	want := []int{9000, 9001, 9002, 9003, 9004, 9005}
	if l, _ := st.List(); !slices.Equal(ports(l), want) {
		t.Fatalf("list of the restarted held node: %v, want its copy %v", ports(l), want)
	}
	if _, _, err := st.Put(spec(9006, "10.0.0.1:1"), desired.Match{}); !errors.Is(err, desired.ErrHeld) {
		t.Fatalf("put on the restarted held node: %v, want ErrHeld", err)
	}
	if _, err := st.Confirm(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	restored := []int{9000, 9001, 9002, 9003}
	if l, _ := st.List(); !slices.Equal(ports(l), restored) || st.Condition().Alarm != nil {
		t.Fatalf("after the confirmation: %v, alarm %+v; want %v", ports(l), st.Condition().Alarm, restored)
	}
	st.Close()
	st = openState(t, cli, "/p", fast(cache))
	if al := st.Condition().Alarm; al != nil {
		t.Fatalf("held again after a confirmation and a restart: %+v", al)
	}
}

// etcd restored from an older backup and written past the revision of a
// node's copy while the node was stopped: its revision is above the
// copy's, its cluster the same, and the watch from the copy's revision
// would never deliver the deletions the restore implied. The node sees
// that etcd's state at its revision is not its copy and holds; a
// confirmation makes it take etcd's state.
func TestRestoredAndWrittenPastTheCopyHolds(t *testing.T) {
	srv, cli := ownServer(t)
	cache := filepath.Join(t.TempDir(), "cache.db")
	st, err := Open(cli, "/p", fast(cache))
	if err != nil {
		t.Fatal(err)
	}
	mustPutAll(t, st, 9000)
	restore := backup(t, srv)
	within(t, "etcd answers", func() bool { return st.Check() == nil })
	mustPutAll(t, st, 9001, 9002, 9003)
	within(t, "the copy has every write", func() bool { return slices.Equal(localPorts(st), []int{9000, 9001, 9002, 9003}) })
	through := st.through()
	st.Close()
	restore()

	other := openState(t, clientOf(t, srv), "/p", fast("")) // a node without a copy: nothing to hold
	for p := 9010; ; p++ {
		mustPutAll(t, other, p)
		if st := other.through(); st > through {
			break
		}
		if p > 9100 {
			t.Fatalf("etcd's revision stays below %d", through)
		}
	}
	want, _ := other.List()

	st = openState(t, cli, "/p", fast(cache))
	al := st.Condition().Alarm
	if al == nil || al.Reason != ReasonBackwards || al.NodeRevision != through || al.StoreRevision <= through ||
		al.Deletes != 3 || !strings.Contains(al.Message, "written since") {
		t.Fatalf("alarm of a node whose etcd was restored and written past its revision: %+v", al)
	}
	if l, _ := st.List(); !slices.Equal(ports(l), []int{9000, 9001, 9002, 9003}) {
		t.Fatalf("list while held: %v, want the copy", ports(l))
	}
	if _, err := other.Confirm(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	within(t, "the node takes etcd's state", func() bool {
		return st.Condition().Alarm == nil && slices.Equal(localPorts(st), ports(want))
	})
	mustPutAll(t, st, 9200)
	within(t, "the other node sees the write", func() bool { return slices.Contains(localPorts(other), 9200) })
}

// A node that was running when etcd went away and came back restored
// and written past its copy compares etcd's history with its copy before
// its watch delivers again, and holds.
func TestNodeUpWhileEtcdRestoredHolds(t *testing.T) {
	srv, cli := ownServer(t)
	// No probe between the restore and the writes sees the revision go
	// back: the test marks etcd down as a probe would have.
	o := fast(filepath.Join(t.TempDir(), "cache.db"))
	o.CheckInterval = time.Hour
	st := openState(t, cli, "/p", o)
	mustPutAll(t, st, 9000)
	restore := backup(t, srv)
	within(t, "etcd answers", func() bool { return st.Check() == nil })
	mustPutAll(t, st, 9001, 9002, 9003)
	within(t, "the copy has every write", func() bool { return slices.Equal(localPorts(st), []int{9000, 9001, 9002, 9003}) })
	through := st.through()
	st.markDown(errors.New("test: etcd stopped"))
	restore()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for p := 9010; ; p++ {
		resp, err := cli.Put(ctx, fmt.Sprintf("/p/streams/tcp/%d", p), `{"protocol":"tcp","listen":`+fmt.Sprint(p)+`,"backends":["10.0.0.1:1"]}`)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(resp.Header.Revision) > through+2 {
			break
		}
		if p > 9100 {
			t.Fatalf("etcd's revision stays below %d", through)
		}
	}
	st.probe(ctx)
	al := st.Condition().Alarm
	if al == nil || al.Reason != ReasonBackwards || !strings.Contains(al.Message, "written since") {
		t.Fatalf("alarm after etcd came back restored and written past the copy: %+v", al)
	}
	if got := localPorts(st); !slices.Equal(got, []int{9000, 9001, 9002, 9003}) {
		t.Fatalf("the held copy: %v", got)
	}
}

// "More than half of its streams" counts the streams that target the
// node: a mass deletion of another node's streams does not hold a node
// that never served them, and holds the node that did; a deletion of
// most of a node's own streams holds it however many streams other nodes
// have.
func TestMassDeletionCountsThisNodesStreams(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	named := func(name string) *State {
		o := fast(filepath.Join(t.TempDir(), "cache.db"))
		o.Node = name
		return openState(t, sharedClient, prefix, o)
	}
	edge1, edge2 := named("edge-1"), named("edge-2")
	on := func(node string, ps ...int) {
		t.Helper()
		for _, p := range ps {
			sp := spec(p, "10.0.0.1:1")
			sp.Nodes = []string{node}
			if _, _, err := edge1.Put(sp, desired.Match{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	on("edge-1", 9000, 9001, 9002)
	on("edge-2", 9010, 9011, 9012, 9013, 9014, 9015)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rawDelete := func(ps ...int) {
		t.Helper()
		var ops []clientv3.Op
		for _, p := range ps {
			ops = append(ops, clientv3.OpDelete(edge1.key(tcp(p))))
		}
		if _, err := sharedClient.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	within(t, "edge-2 has every stream", func() bool { return len(localPorts(edge2)) == 9 })

	rawDelete(9010, 9011, 9012, 9013, 9014, 9015) // 6 of 9 streams, none of edge-1's
	within(t, "edge-2 holds", func() bool { return edge2.Condition().Alarm != nil })
	if al := edge2.Condition().Alarm; al.Reason != ReasonMassDeletion || al.Deletes != 6 {
		t.Fatalf("edge-2's alarm: %+v", al)
	}
	within(t, "edge-1 applies the deletion", func() bool { return slices.Equal(localPorts(edge1), []int{9000, 9001, 9002}) })
	if al := edge1.Condition().Alarm; al != nil {
		t.Fatalf("edge-1 held by the deletion of streams it never served: %+v", al)
	}

	on("edge-2", 9010, 9011, 9012, 9013, 9014, 9015)
	within(t, "edge-1 has the new streams", func() bool { return len(localPorts(edge1)) == 9 })
	rawDelete(9000, 9001) // 2 of 9 streams, 2 of edge-1's 3
	within(t, "edge-1 holds", func() bool { return edge1.Condition().Alarm != nil })
	if al := edge1.Condition().Alarm; al.Reason != ReasonMassDeletion || al.Deletes != 2 || !strings.Contains(al.Message, "2 of this node's 3 streams") {
		t.Fatalf("edge-1's alarm: %+v", al)
	}
	if got := localPorts(edge1); len(got) != 9 {
		t.Fatalf("edge-1's held copy: %v", got)
	}
}
