package etcdstate

import (
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/internal/etcdtest"
	"github.com/streamconductor/stream-conductor/stream"
)

// On an etcd with its default --max-txn-ops (128), a DeleteMany of 200
// streams goes through in transactions that each fit: every stream is
// deleted, in 2 revisions.
func TestDeleteManyBeyondMaxTxnOps(t *testing.T) {
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
	var items []desired.Conditional
	for i := range 200 {
		sp, _, err := st.Put(spec(10000+i, "10.0.0.1:1"), desired.Match{})
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, desired.Conditional{ID: sp.ID(), Revision: sp.Revision})
	}
	_, before := st.List()
	deleted, _, err := st.DeleteMany(items)
	if err != nil || len(deleted) != 200 {
		t.Fatalf("DeleteMany of 200 streams on an etcd taking 128 operations: %d deleted, %v", len(deleted), err)
	}
	changes, err := st.Since(before)
	if err != nil {
		t.Fatal(err)
	}
	revs := map[uint64]bool{}
	for _, c := range changes {
		revs[c.Revision] = true
	}
	if len(changes) != 200 || len(revs) != 2 {
		t.Fatalf("%d changes in %d revisions, want 200 in 2", len(changes), len(revs))
	}
	if list, _ := st.List(); len(list) != 0 {
		t.Fatalf("%d streams left", len(list))
	}
}

// A DeleteMany on a node whose copy may not yet have another node's
// renew skips the renewed stream (its transaction's compare fails, and it
// tries again with the others) and deletes the rest.
func TestDeleteManySkipsAnotherNodesRenew(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	a := openState(t, sharedClient, prefix, Options{})
	b := openState(t, newClient(t), prefix, Options{})
	var items []desired.Conditional
	for port := 9000; port < 9003; port++ {
		sp, _, err := a.Put(spec(port, "10.0.0.1:1"), desired.Match{})
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, desired.Conditional{ID: sp.ID(), Revision: sp.Revision})
	}
	renewed, _, err := b.Put(spec(9001, "10.0.0.2:1"), desired.Match{Revision: items[1].Revision})
	if err != nil {
		t.Fatal(err)
	}
	deleted, _, err := a.DeleteMany(items)
	if err != nil || len(deleted) != 2 || deleted[0].Listen != 9000 || deleted[1].Listen != 9002 {
		t.Fatalf("DeleteMany: %+v, %v; want tcp/9000 and tcp/9002", deleted, err)
	}
	got, err := b.Get(stream.ID{Protocol: stream.TCP, Port: 9001})
	if err != nil || got.Revision != renewed.Revision {
		t.Fatalf("the renewed stream: %+v, %v", got, err)
	}
}
