package etcdstate

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
)

// countingKV counts the transactions a client sends, and its reads of
// streams (not of the marker, nor the probes' of P/confirm).
type countingKV struct {
	clientv3.KV
	n atomic.Int64
}

func (c *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if strings.Contains(key, "/streams/") {
		c.n.Add(1)
	}
	return c.KV.Get(ctx, key, opts...)
}

func (c *countingKV) Txn(ctx context.Context) clientv3.Txn {
	c.n.Add(1)
	return c.KV.Txn(ctx)
}

// countingClient is a new client of the shared server whose KV requests
// are counted.
func countingClient(t *testing.T) (*clientv3.Client, *countingKV) {
	cli := newClient(t)
	kv := &countingKV{KV: cli.KV}
	cli.KV = kv
	return cli, kv
}

// A create, an update and a delete whose local copy is current are one
// request each: the stream is read from the local copy, and the
// transaction checks it is still what etcd has.
func TestWriteIsOneRequestWhenTheLocalCopyIsCurrent(t *testing.T) {
	needEtcd(t)
	cli, kv := countingClient(t)
	st := openState(t, cli, newPrefix(), Options{})
	requests := func(what string, write func() error) {
		t.Helper()
		st.List() // the watch delivered every write
		before := kv.n.Load()
		if err := write(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n := kv.n.Load() - before; n != 1 {
			t.Fatalf("%s sent %d requests to etcd; want 1", what, n)
		}
	}
	var rev uint64
	requests("create", func() error {
		sp, _, err := st.Put(spec(9000, "10.0.0.1:1"), desired.Match{Absent: true})
		rev = sp.Revision
		return err
	})
	requests("update", func() error {
		_, prev, err := st.Put(spec(9000, "10.0.0.2:1"), desired.Match{Revision: rev})
		if err == nil && (prev == nil || prev.Backends[0] != "10.0.0.1:1") {
			t.Fatalf("update replaced %+v; want the stream at 10.0.0.1:1", prev)
		}
		return err
	})
	requests("delete", func() error {
		_, _, err := st.Delete(tcp(9000), desired.Match{})
		return err
	})
}

// A write on a node whose local copy does not have another node's write
// yet is still checked against etcd: If-Match with the other node's
// revision succeeds, If-None-Match fails, and the stream replaced is the
// other node's.
func TestWriteAfterAnotherNodesWrite(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	a := openState(t, sharedClient, prefix, Options{})
	b := openState(t, newClient(t), prefix, Options{})
	for i := range 20 {
		port := 9000 + i
		onB, _, err := b.Put(spec(port, "10.0.0.1:1"), desired.Match{})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.Put(spec(port, "10.0.0.9:1"), desired.Match{Absent: true}); err == nil {
			t.Fatalf("port %d: a create on node A over node B's stream succeeded", port)
		}
		_, prev, err := a.Put(spec(port, "10.0.0.2:1"), desired.Match{Revision: onB.Revision})
		if err != nil {
			t.Fatalf("port %d: update on node A with node B's revision %d: %v", port, onB.Revision, err)
		}
		if prev == nil || prev.Revision != onB.Revision || prev.Backends[0] != "10.0.0.1:1" {
			t.Fatalf("port %d: node A replaced %+v; want node B's stream at %d", port, prev, onB.Revision)
		}
		onB, _, err = b.Put(spec(port, "10.0.0.3:1"), desired.Match{})
		if err != nil {
			t.Fatal(err)
		}
		if deleted, _, err := a.Delete(tcp(port), desired.Match{Revision: onB.Revision}); err != nil || deleted.Backends[0] != "10.0.0.3:1" {
			t.Fatalf("port %d: delete on node A with node B's revision: %+v, %v", port, deleted, err)
		}
	}
}
