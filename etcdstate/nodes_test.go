package etcdstate

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/stream"
)

// register registers name on st with a short TTL, closed at the test's end.
func register(t *testing.T, st *State, name string, info func() stream.NodeInfo) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := st.Register(ctx, name, NodeOptions{TTL: 2 * time.Second, Interval: 200 * time.Millisecond}, info)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// nodeNames lists the names registered under st's prefix.
func nodeNames(t *testing.T, st *State) []string {
	t.Helper()
	nodes, err := st.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return names
}

// waitFor polls cond every 50ms for at most within.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within %s: %s", within, what)
}

func infoOf(name string, applied *atomic.Uint64) func() stream.NodeInfo {
	return func() stream.NodeInfo {
		return stream.NodeInfo{Name: name, API: "http://" + name + ":8080", Version: "test", AppliedRevision: applied.Load(),
			NginxRunning: true, Streams: stream.NodeStreams{Active: 2, Failed: 1}}
	}
}

// Two nodes are listed with what they say of themselves, refreshed as it
// changes; one that stops cleanly leaves the list at once.
func TestNodesRegisterListRefreshAndLeave(t *testing.T) {
	needEtcd(t)
	st := openState(t, sharedClient, newPrefix(), Options{})
	var revA, revB atomic.Uint64
	a := register(t, st, "edge-a", infoOf("edge-a", &revA))
	defer a.Close()
	b := register(t, st, "edge-b", infoOf("edge-b", &revB))
	if got := nodeNames(t, st); len(got) != 2 || got[0] != "edge-a" || got[1] != "edge-b" {
		t.Fatalf("nodes %v, want edge-a and edge-b", got)
	}
	nodes, _ := st.Nodes(context.Background())
	if n := nodes[0]; n.API != "http://edge-a:8080" || !n.NginxRunning || n.Streams != (stream.NodeStreams{Active: 2, Failed: 1}) ||
		time.Since(n.LastSeen) > time.Minute {
		t.Fatalf("edge-a listed as %+v", n)
	}
	revA.Store(42)
	waitFor(t, "edge-a's applied revision refreshed to 42", 5*time.Second, func() bool {
		nodes, err := st.Nodes(context.Background())
		return err == nil && len(nodes) == 2 && nodes[0].AppliedRevision == 42
	})
	b.Close()
	if got := nodeNames(t, st); len(got) != 1 || got[0] != "edge-a" {
		t.Fatalf("after edge-b closed: nodes %v, want edge-a only", got)
	}
}

// A node whose process dies (its client gone, the lease not revoked)
// disappears when its lease expires, and its name can then be taken again.
func TestNodeThatDiesExpires(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	st := openState(t, sharedClient, prefix, Options{})
	dying := newClient(t)
	var rev atomic.Uint64
	register(t, openState(t, dying, prefix, Options{}), "edge-a", infoOf("edge-a", &rev))
	dying.Close() // no revoke: as kill -9 would
	waitFor(t, "edge-a gone with its lease", 10*time.Second, func() bool { return len(nodeNames(t, st)) == 0 })
	again := register(t, st, "edge-a", infoOf("edge-a", &rev))
	defer again.Close()
	if got := nodeNames(t, st); len(got) != 1 {
		t.Fatalf("edge-a registered again: nodes %v", got)
	}
}

// A name a live node holds is refused, after waiting one TTL for the
// holder to prove alive; the holder stays listed.
func TestNodeNameHeldByALiveNodeIsRefused(t *testing.T) {
	needEtcd(t)
	st := openState(t, sharedClient, newPrefix(), Options{})
	var rev atomic.Uint64
	a := register(t, st, "edge-a", infoOf("edge-a", &rev))
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := st.Register(ctx, "edge-a", NodeOptions{TTL: 2 * time.Second}, infoOf("edge-a", &rev))
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("second edge-a: %v, want ErrNameTaken", err)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("refused after %s, before the holder's TTL", took)
	}
	if got := nodeNames(t, st); len(got) != 1 || got[0] != "edge-a" {
		t.Fatalf("nodes %v after the refusal, want edge-a", got)
	}
}

// A node restarted on the same data dir (the same instance) after a crash
// takes its name back at once, though its old lease is still alive: it
// does not wait a TTL, nor is it refused. Another instance still is.
func TestNodeOfTheSameInstanceTakesItsNameBack(t *testing.T) {
	needEtcd(t)
	st := openState(t, sharedClient, newPrefix(), Options{})
	var rev atomic.Uint64
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := NodeOptions{TTL: 4 * time.Second, Instance: "data-dir-1"}
	crashed, err := st.Register(ctx, "edge-a", opts, infoOf("edge-a", &rev))
	if err != nil {
		t.Fatal(err)
	}
	defer crashed.Close() // its lease lives on as a crashed node's would
	start := time.Now()
	again, err := st.Register(ctx, "edge-a", opts, infoOf("edge-a", &rev))
	if err != nil {
		t.Fatalf("the same instance registering again: %v", err)
	}
	defer again.Close()
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("took the name back after %s, not at once", took)
	}
	nodes, err := st.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Instance != "data-dir-1" {
		t.Fatalf("nodes %+v, %v", nodes, err)
	}
	other := NodeOptions{TTL: 2 * time.Second, Instance: "data-dir-2"}
	if _, err := st.Register(ctx, "edge-a", other, infoOf("edge-a", &rev)); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("another instance with the name: %v, want ErrNameTaken", err)
	}
}

// A node name with a slash would be another key's path: refused.
func TestNodeNameWithSlashIsRefused(t *testing.T) {
	needEtcd(t)
	st := openState(t, sharedClient, newPrefix(), Options{})
	var rev atomic.Uint64
	if _, err := st.Register(context.Background(), "a/b", NodeOptions{}, infoOf("a/b", &rev)); err == nil {
		t.Fatal("a name with a slash was registered")
	}
}

// A node whose lease was lost (revoked here, as an etcd outage longer than
// the TTL would let it expire) registers again at its next refresh.
func TestNodeRegistersAgainAfterItsLeaseIsLost(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	st := openState(t, sharedClient, prefix, Options{})
	var rev atomic.Uint64
	n := register(t, st, "edge-a", infoOf("edge-a", &rev))
	defer n.Close()
	kv := rawGet(t, prefix+"/nodes/edge-a").Kvs
	if len(kv) != 1 || kv[0].Lease == 0 {
		t.Fatalf("edge-a's key: %v", kv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	old := kv[0].Lease
	if _, err := sharedClient.Revoke(ctx, clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "edge-a listed again under a new lease", 10*time.Second, func() bool {
		kv := rawGet(t, prefix+"/nodes/edge-a").Kvs
		return len(kv) == 1 && kv[0].Lease != 0 && kv[0].Lease != old
	})
}

// nodeKey is the node's key as etcd holds it (nil: none).
func nodeKey(t *testing.T, prefix, name string) *stream.NodeInfo {
	t.Helper()
	kvs := rawGet(t, prefix+"/nodes/"+name).Kvs
	if len(kvs) == 0 {
		return nil
	}
	var ni stream.NodeInfo
	if err := json.Unmarshal(kvs[0].Value, &ni); err != nil {
		t.Fatal(err)
	}
	return &ni
}

// A pass that advanced the applied revision is published at once, even
// right after another publish: writes wait for it. (It used to wait out
// the publish gap.)
func TestPublishOfANewRevisionIsNotDelayed(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	st := openState(t, sharedClient, prefix, Options{})
	var rev atomic.Uint64
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const gap = 3 * time.Second
	n, err := st.Register(ctx, "edge-a", NodeOptions{TTL: 10 * time.Second, Interval: time.Minute, PublishGap: gap}, infoOf("edge-a", &rev))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for want := uint64(1); want <= 3; want++ {
		rev.Store(want)
		n.Publish()
		start := time.Now()
		waitFor(t, "the new applied revision published", gap, func() bool {
			ni := nodeKey(t, prefix, "edge-a")
			return ni != nil && ni.AppliedRevision == want
		})
		if took := time.Since(start); took > gap/2 {
			t.Fatalf("revision %d published after %s: held back by the publish gap (%s)", want, took, gap)
		}
	}
}
