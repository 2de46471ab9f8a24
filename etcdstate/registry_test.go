package etcdstate

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/internal/eventstest"
	"github.com/streamconductor/stream-conductor/stream"
)

// The registry watch knows, in memory, each live node's published
// applied revision and not-active streams, as soon as Publish writes
// them; a node that leaves is taken out and remembered as gone.
func TestRegistryFollowsPublishedStatus(t *testing.T) {
	needEtcd(t)
	st := openState(t, sharedClient, newPrefix(), Options{})
	reg := st.WatchNodes(zerolog.Nop(), nil)
	defer reg.Close()
	var applied atomic.Uint64
	var failing atomic.Pointer[[]stream.StreamStatus]
	failing.Store(&[]stream.StreamStatus{})
	info := func() stream.NodeInfo {
		return stream.NodeInfo{Name: "edge-a", AppliedRevision: applied.Load(), NotActive: *failing.Load()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A refresh interval far beyond the test: only Publish writes.
	a, err := st.Register(ctx, "edge-a", NodeOptions{TTL: 2 * time.Second, Interval: time.Hour}, info)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := register(t, st, "edge-b", func() stream.NodeInfo { return stream.NodeInfo{Name: "edge-b"} })
	waitFor(t, "the registry lists edge-a and edge-b", 5*time.Second, func() bool {
		live, _, _ := reg.Nodes()
		return len(live) == 2
	})

	_, _, changed := reg.Nodes()
	applied.Store(42)
	failing.Store(&[]stream.StreamStatus{{ID: stream.ID{Protocol: stream.TCP, Port: 9000},
		Status: stream.Status{State: stream.Failed, Revision: 41, Error: "bind() failed"}}})
	a.Publish()
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish changed nothing in the registry")
	}
	waitFor(t, "edge-a published revision 42 and tcp/9000 failed", 5*time.Second, func() bool {
		live, _, _ := reg.Nodes()
		n := live["edge-a"]
		return n.AppliedRevision == 42 && len(n.NotActive) == 1 && n.NotActive[0].Error == "bind() failed"
	})

	b.Close()
	waitFor(t, "edge-b leaves the live nodes and is remembered gone", 5*time.Second, func() bool {
		live, gone, _ := reg.Nodes()
		_, isGone := gone["edge-b"]
		return len(live) == 1 && isGone
	})
}

// A burst of Publish calls is written at most once per publish gap.
func TestPublishIsCoalesced(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	st := openState(t, sharedClient, prefix, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := st.Register(ctx, "edge-a", NodeOptions{TTL: 2 * time.Second, Interval: time.Hour, PublishGap: 200 * time.Millisecond},
		func() stream.NodeInfo { return stream.NodeInfo{Name: "edge-a"} })
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	key := st.prefix + "/nodes/edge-a"
	before := rawGet(t, key).Kvs[0].Version
	start := time.Now()
	for range 200 {
		a.Publish()
		time.Sleep(time.Millisecond) // a burst of passes, spread over ~0.3s
	}
	waitFor(t, "the burst is published", 5*time.Second, func() bool { return rawGet(t, key).Kvs[0].Version > before })
	time.Sleep(300 * time.Millisecond) // let any write still due land
	writes := rawGet(t, key).Kvs[0].Version - before
	if most := int64(time.Since(start)/(200*time.Millisecond)) + 1; writes > most {
		t.Fatalf("%d writes in %s for 200 Publish calls; want at most %d (one per 200ms)", writes, time.Since(start), most)
	}
}

// The registry publishes a node that registers after its first list (the
// baseline, which publishes nothing) and one whose registration ends.
func TestRegistryPublishesNodesJoiningAndLeaving(t *testing.T) {
	needEtcd(t)
	st := openState(t, sharedClient, newPrefix(), Options{})
	a := register(t, st, "edge-a", func() stream.NodeInfo { return stream.NodeInfo{Name: "edge-a"} })
	defer a.Close()
	pub := &eventstest.Recorder{}
	reg := st.WatchNodes(zerolog.Nop(), pub)
	defer reg.Close()
	b := register(t, st, "edge-b", func() stream.NodeInfo { return stream.NodeInfo{Name: "edge-b", API: "http://127.0.0.2:8080"} })
	waitFor(t, "edge-b joined", 5*time.Second, func() bool { return pub.Len() == 1 })
	b.Close()
	waitFor(t, "edge-b left", 5*time.Second, func() bool { return pub.Len() == 2 })
	want := []string{"node.joined edge-b http://127.0.0.2:8080", "node.left edge-b http://127.0.0.2:8080"}
	var got []string // "node.joined edge-b http://…"
	for _, p := range pub.Take() {
		n := p.Data.(events.NodeChange)
		got = append(got, p.Type+" "+n.Name+" "+n.APIURL)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q (edge-a, in the first list, is not news)", got, want)
	}
}
