package etcdstate

import (
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/desired/conformance"
	"github.com/streamconductor/stream-conductor/internal/etcdtest"
	"github.com/streamconductor/stream-conductor/stream"
)

func spec(port int, backend string) stream.Spec {
	return stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{backend}}
}

func tcp(port int) stream.ID { return stream.ID{Protocol: stream.TCP, Port: port} }

// A stream's revision (its ETag) is its key's modification revision as
// etcd reports it, on the write, on a read and in a list; the state's
// revision is its marker's.
func TestETagIsTheKeysModRevision(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	st := openState(t, sharedClient, prefix, Options{})
	if _, _, err := st.Put(spec(9000, "10.0.0.1:1"), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	stored, _, err := st.Put(spec(9000, "10.0.0.2:1"), desired.Match{})
	if err != nil {
		t.Fatal(err)
	}
	raw := rawGet(t, prefix+"/streams/tcp/9000")
	if len(raw.Kvs) != 1 {
		t.Fatalf("etcd holds %d keys for tcp/9000, want 1", len(raw.Kvs))
	}
	modRev := uint64(raw.Kvs[0].ModRevision)
	got, err := st.Get(tcp(9000))
	if err != nil {
		t.Fatal(err)
	}
	list, rev := st.List()
	if stored.Revision != modRev || got.Revision != modRev || len(list) != 1 || list[0].Revision != modRev {
		t.Fatalf("revisions: put %d, get %d, list %+v; etcd's mod_revision is %d", stored.Revision, got.Revision, list, modRev)
	}
	if marker := rawGet(t, prefix+"/streams"); rev != uint64(marker.Kvs[0].ModRevision) || rev != modRev {
		t.Fatalf("the state's revision is %d, its marker's mod_revision %d, the last write's %d", rev, marker.Kvs[0].ModRevision, modRev)
	}
	if raw.Kvs[0].CreateRevision == raw.Kvs[0].ModRevision {
		t.Fatalf("the replaced key's create revision is its mod revision %d", modRev)
	}
}

// A write through another node (its own client and State on the same
// prefix) wakes this node's watchers and is in its changes.
func TestAnotherNodesWriteIsSeen(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	a := openState(t, sharedClient, prefix, Options{})
	b := openState(t, newClient(t), prefix, Options{})
	_, start := a.List()
	updated := a.Updated()
	stored, _, err := b.Put(spec(9000, "10.0.0.7:1"), desired.Match{Absent: true})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-updated:
	case <-time.After(10 * time.Second):
		t.Fatal("node A's watchers were not woken within 10s by node B's write")
	}
	changes, err := a.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].ID != tcp(9000) || changes[0].Revision != stored.Revision ||
		changes[0].Spec == nil || changes[0].Spec.Backends[0] != "10.0.0.7:1" {
		t.Fatalf("node A's changes since %d: %+v; want node B's write at %d", start, changes, stored.Revision)
	}
	if local, ok := a.Local(tcp(9000)); !ok || local.Revision != stored.Revision {
		t.Fatalf("node A's local copy holds %+v, %v; want node B's write at %d", local, ok, stored.Revision)
	}
	updated = a.Updated()
	if _, _, err := b.Delete(tcp(9000), desired.Match{Revision: stored.Revision}); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Get(tcp(9000)); !errors.Is(err, desired.ErrNotFound) {
		t.Fatalf("node A reads %+v, %v after node B's delete; want ErrNotFound", got, err)
	}
	select {
	case <-updated:
	case <-time.After(10 * time.Second):
		t.Fatal("node A's watchers were not woken within 10s by node B's delete")
	}
	if local, ok := a.Local(tcp(9000)); ok {
		t.Fatalf("node A's local copy still holds %+v after node B's delete", local)
	}
}

// A State opened on a prefix that holds streams has them in its local
// copy at once.
func TestLocalCopyLoadedAtOpen(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	first := openState(t, sharedClient, prefix, Options{})
	stored, _, err := first.Put(spec(9000, "10.0.0.1:1"), desired.Match{})
	if err != nil {
		t.Fatal(err)
	}
	again := openState(t, newClient(t), prefix, Options{})
	if local, ok := again.Local(tcp(9000)); !ok || local.Revision != stored.Revision || local.Backends[0] != "10.0.0.1:1" {
		t.Fatalf("the local copy at open holds %+v, %v; want the stream at %d", local, ok, stored.Revision)
	}
}

// Sixteen allocators on two nodes (two clients, two States, one prefix)
// share eight ports: each port goes to one of them, the rest are refused.
func TestAllocationAcrossNodes(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	nodes := []*State{openState(t, sharedClient, prefix, Options{}), openState(t, newClient(t), prefix, Options{})}
	conformance.AllocateConcurrently(t, nodes[0], nodes[1])
}

// A State opened on a prefix that has a history answers for changes after
// its revision, and says it does not keep the older ones.
func TestSinceBeforeOpenIsCompacted(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	first := openState(t, sharedClient, prefix, Options{})
	a, _, err := first.Put(spec(9000, "10.0.0.1:1"), desired.Match{})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := first.Put(spec(9001, "10.0.0.1:1"), desired.Match{})
	if err != nil {
		t.Fatal(err)
	}
	again := openState(t, newClient(t), prefix, Options{})
	if _, err := again.Since(a.Revision); !errors.Is(err, desired.ErrCompacted) {
		t.Fatalf("since %d (before opening at %d): %v, want ErrCompacted", a.Revision, b.Revision, err)
	}
	if c, err := again.Since(b.Revision); err != nil || len(c) != 0 {
		t.Fatalf("since the revision it opened at: %+v, %v; want nothing", c, err)
	}
}

// An etcd that cannot be reached is ErrUnavailable: at open and for Check.
func TestUnreachableIsUnavailable(t *testing.T) {
	needEtcd(t)
	addr := etcdtest.FreeAddr() // nothing listens there
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + addr}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := Open(cli, newPrefix(), Options{Timeout: 300 * time.Millisecond}); !errors.Is(err, desired.ErrUnavailable) {
		t.Fatalf("open on an unreachable etcd: %v, want ErrUnavailable", err)
	}
	st := openState(t, sharedClient, newPrefix(), Options{Timeout: 300 * time.Millisecond})
	if err := st.Check(); err != nil {
		t.Fatalf("check on the running etcd: %v", err)
	}
	cut := &State{cli: cli, marker: st.marker, timeout: st.timeout} // the same state, its etcd gone
	if err := cut.Check(); !errors.Is(err, desired.ErrUnavailable) {
		t.Fatalf("check on an unreachable etcd: %v, want ErrUnavailable", err)
	}
}

// On an etcd with its default --max-txn-ops (128), an import of more
// streams is refused whole, with an error that says which flag to raise.
func TestImportBeyondMaxTxnOps(t *testing.T) {
	needEtcd(t)
	srv, err := etcdtest.Start(t.TempDir(), "--max-txn-ops", "128")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	st := openState(t, cli, "/small", Options{})
	specs := make([]stream.Spec, 200)
	for i := range specs {
		specs[i] = spec(10000+i, "10.0.0.1:1")
	}
	_, err = st.Import(specs, false)
	if err == nil || !strings.Contains(err.Error(), "--max-txn-ops") {
		t.Fatalf("import of 200 streams on an etcd taking 128 operations: %v, want the flag named", err)
	}
	if list, _ := st.List(); len(list) != 0 {
		t.Fatalf("a refused import left %d streams", len(list))
	}
}

// Changes (the reconciler's trigger) fires after another node's write;
// BackupSize is the size of the backup taken now.
func TestChangesAndBackupSize(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	a := openState(t, sharedClient, prefix, Options{})
	b := openState(t, newClient(t), prefix, Options{})
	select {
	case <-a.Changes():
		t.Fatal("Changes fired before any write")
	default:
	}
	if _, _, err := b.Put(spec(9000, "10.0.0.7:1"), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("Changes did not fire within 10s of another node's write")
	}
	var buf strings.Builder
	if err := a.Backup(&buf, func(desired.BackupInfo) {}); err != nil {
		t.Fatal(err)
	}
	if got := a.BackupSize(); got != int64(buf.Len()) || got == 0 {
		t.Fatalf("BackupSize = %d, a backup has %d bytes", got, buf.Len())
	}
}
