package reconcile

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// poolHarness runs a Pool of fake masters over a real store.
type poolHarness struct {
	t     *testing.T
	dir   string
	store *store.Store
	pool  *Pool
	mu    sync.Mutex
	fakes map[int]*fakeNginx
}

func newPoolHarness(t *testing.T, shards int, found ...int) *poolHarness {
	t.Helper()
	tmp := t.TempDir()
	st, err := store.Open(filepath.Join(tmp, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &poolHarness{t: t, dir: filepath.Join(tmp, "stream.d"), store: st, fakes: map[int]*fakeNginx{}}
	if err := os.Mkdir(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h.pool = NewPool(PoolConfig{
		Config: Config{
			Dir:           h.dir,
			Render:        nginxconf.RenderOptions{Prefix: "stream-"},
			StateFile:     filepath.Join(tmp, "applied"),
			VerifyTimeout: time.Second,
			Ports:         poolPorts{h},
			Resolver:      newFakeResolver(),
			Log:           zerolog.Nop(),
		},
		Shards: shards,
		Found:  found,
		Driver: func(k int) (Nginx, string, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			f, ok := h.fakes[k]
			if !ok {
				f = newFakeNginx(ShardDir(h.dir, k))
				h.fakes[k] = f
			}
			return f, filepath.Join(tmp, "applied-"+ShardDir("", k)), nil
		},
		IdleStop: time.Hour,
	}, st)
	return h
}

func (h *poolHarness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.pool.Run(ctx)
	}()
	h.t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (h *poolHarness) fake(k int) *fakeNginx {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fakes[k]
}

// put writes a stream and waits until the pool applied it.
func (h *poolHarness) put(port int) stream.Spec {
	h.t.Helper()
	sp := h.write(port)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.pool.WaitApplied(ctx, sp.Revision, []stream.Spec{sp}); err != nil {
		h.t.Fatalf("WaitApplied %s: %v", sp.ID(), err)
	}
	if st := h.pool.Status(sp.ID(), sp.Revision); st.State != stream.Active {
		h.t.Fatalf("%s is %s after WaitApplied, want active", sp.ID(), st.State)
	}
	return sp
}

func (h *poolHarness) write(port int) stream.Spec {
	h.t.Helper()
	sp, _, err := h.store.Put(stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{"192.0.2.1:80"}}, store.Match{})
	if err != nil {
		h.t.Fatal(err)
	}
	return sp
}

// shardOfFile returns the shard whose directory holds the file of the
// stream on port, or -1.
func (h *poolHarness) shardOfFile(port int) int {
	name := nginxconf.FileName("stream-", stream.ID{Protocol: stream.TCP, Port: port})
	found := -1
	for k := range 64 {
		if _, err := os.Stat(filepath.Join(ShardDir(h.dir, k), name)); err == nil {
			if found >= 0 {
				h.t.Fatalf("port %d's file is in shards %d and %d", port, found, k)
			}
			found = k
		}
	}
	return found
}

// poolPorts is the host as the fake masters of a pool make it: a port
// listens when any shard's fake serves it.
type poolPorts struct{ h *poolHarness }

func (p poolPorts) BindConflict(stream.Spec, string) error { return nil }

func (p poolPorts) Listening(proto stream.Protocol) (map[int]bool, error) {
	p.h.mu.Lock()
	fakes := maps.Clone(p.h.fakes)
	p.h.mu.Unlock()
	up := map[int]bool{}
	for _, f := range fakes {
		f.mu.Lock()
		maps.Copy(up, f.live[proto])
		f.mu.Unlock()
	}
	return up, nil
}

func TestPoolPlacesANewStreamOnAnIdleShard(t *testing.T) {
	h := newPoolHarness(t, 4)
	h.run()
	h.put(9000)
	first := h.shardOfFile(9000)
	// Right after its reload the first stream's master cools down: the
	// next stream goes elsewhere rather than wait for it. (The cool-down
	// is stretched so that a slow machine cannot end it before the put.)
	h.pool.mu.Lock()
	h.pool.shards[first].rec.reloadedAt.Store(time.Now().Add(time.Minute).UnixNano())
	h.pool.mu.Unlock()
	h.put(9001)
	second := h.shardOfFile(9001)
	if first < 0 || second < 0 || first == second {
		t.Fatalf("streams on shards %d and %d, want two different shards", first, second)
	}
	// A stream stays on its shard when it is updated.
	sp, _, err := h.store.Put(stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"192.0.2.2:80"}}, store.Match{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.pool.WaitApplied(ctx, sp.Revision, []stream.Spec{sp}); err != nil {
		t.Fatal(err)
	}
	if k := h.shardOfFile(9000); k != first {
		t.Fatalf("updated stream moved from shard %d to %d", first, k)
	}
	if ns := h.pool.NodeStatus(); len(ns.Shards) < 2 || ns.Streams.Active != 2 || ns.AppliedRevision < sp.Revision {
		t.Fatalf("node status %+v, want 2 shards or more, 2 active streams, applied %d", ns, sp.Revision)
	}
}

func TestPoolWriteWaitsOnlyForItsShard(t *testing.T) {
	h := newPoolHarness(t, 4)
	h.run()
	h.put(9000)
	k := h.shardOfFile(9000)
	gate := make(chan struct{})
	h.fake(k).mu.Lock()
	h.fake(k).gate = gate
	h.fake(k).mu.Unlock()
	defer close(gate)
	// An update of the slow shard's stream keeps that shard reloading...
	upd, _, err := h.store.Put(stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"192.0.2.2:80"}}, store.Match{})
	if err != nil {
		t.Fatal(err)
	}
	// ...while a new stream lands on another shard and is applied.
	other := h.put(9001)
	if got := h.shardOfFile(9001); got == k {
		t.Fatalf("new stream placed on the busy shard %d", k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.pool.WaitApplied(ctx, upd.Revision, []stream.Spec{upd}); err == nil {
		t.Fatal("the update of the blocked shard counts as applied")
	}
	if st := h.pool.Status(other.ID(), other.Revision); st.State != stream.Active {
		t.Fatalf("stream on another shard is %s, want active", st.State)
	}
}

func TestPoolDrainsAShardAboveItsCount(t *testing.T) {
	h := newPoolHarness(t, 2, 3)
	sp := h.write(9000)
	// An earlier run with more shards left the stream on shard 3.
	old := ShardDir(h.dir, 3)
	if err := os.MkdirAll(old, 0o755); err != nil {
		t.Fatal(err)
	}
	name := nginxconf.FileName("stream-", sp.ID())
	if err := os.WriteFile(filepath.Join(old, name), []byte("server { listen 9000; proxy_pass 192.0.2.1:80; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.run()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if k := h.shardOfFile(9000); k >= 0 && k < 2 && h.pool.Status(sp.ID(), sp.Revision).State == stream.Active {
			if _, err := os.Stat(old); os.IsNotExist(err) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("stream in shard %d, status %s, shard-3 dir left: %v; shard 3 did %v",
		h.shardOfFile(9000), h.pool.Status(sp.ID(), sp.Revision).State, dirExists(old), h.fake(3).takeActions())
}

func dirExists(d string) bool {
	_, err := os.Stat(d)
	return err == nil
}

// The pool hands its listing to OnList once per revision of the desired
// state: at the first listing and after each change, not when it lists
// again with nothing changed.
func TestPoolHandsEachNewListingToOnList(t *testing.T) {
	h := newPoolHarness(t, 2)
	var mu sync.Mutex
	var got [][]int
	h.pool.cfg.OnList = func(specs []stream.Spec) {
		ports := []int{}
		for _, s := range specs {
			ports = append(ports, s.Listen)
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ports)
	}
	listings := func() [][]int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	h.run()
	deadline := time.Now().Add(5 * time.Second)
	for len(listings()) == 0 { // the first listing, of nothing yet
		if time.Now().After(deadline) {
			t.Fatal("no first listing within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	h.put(9000)
	h.put(9001)
	// Listings with nothing changed: each trigger lists the store again.
	for range 3 {
		h.pool.Trigger()
	}
	h.put(9002) // a change after them, so that they were handled first
	want := [][]int{{}, {9000}, {9000, 9001}, {9000, 9001, 9002}}
	if l := listings(); !slices.EqualFunc(l, want, slices.Equal) {
		t.Fatalf("listings handed to OnList: %v, want %v", l, want)
	}
}

// A shard's size is its ports: a 600-port range fills its shard beyond
// the target size (an even share of the ports, at least 64), so the
// single streams that follow go to another master even when the range's
// is idle. Counted by streams, the range's shard held one stream of 64
// and took them.
func TestPoolWeighsAStreamByItsPorts(t *testing.T) {
	h := newPoolHarness(t, 4)
	h.run()
	rng, _, err := h.store.Put(stream.Spec{Protocol: stream.TCP, Listen: 10000, ListenEnd: 10599, PortMode: stream.PortModeFixed,
		Backends: []string{"192.0.2.1:80"}}, store.Match{})
	if err != nil {
		t.Fatal(err)
	}
	h.waitActive(rng)
	k := h.shardOfFile(10000)
	// The range's master is done with its reload and its cool-down: by
	// placement's other rules it is the shard to take the next stream.
	h.pool.mu.Lock()
	h.pool.shards[k].rec.reloadedAt.Store(time.Now().Add(-time.Minute).UnixNano())
	h.pool.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for h.shardBusy(k) {
		if time.Now().After(deadline) {
			t.Fatalf("shard %d still busy after 5s", k)
		}
		time.Sleep(time.Millisecond)
	}
	h.put(9000)
	if got := h.shardOfFile(9000); got == k || got < 0 {
		t.Fatalf("a single stream went to shard %d, the 600-port range's is %d: want another", got, k)
	}
	h.pool.mu.Lock()
	defer h.pool.mu.Unlock()
	if h.pool.counts[k] != 600 || h.pool.ports != 601 {
		t.Fatalf("shard %d counts %d ports, the pool %d: want 600 and 601", k, h.pool.counts[k], h.pool.ports)
	}
}

// waitActive waits until the pool applied sp and it is active.
func (h *poolHarness) waitActive(sp stream.Spec) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.pool.WaitApplied(ctx, sp.Revision, []stream.Spec{sp}); err != nil {
		h.t.Fatalf("WaitApplied %s: %v", sp.ID(), err)
	}
	if st := h.pool.Status(sp.ID(), sp.Revision); st.State != stream.Active {
		h.t.Fatalf("%s is %s after WaitApplied, want active: %s", sp.ID(), st.State, st.Error)
	}
}

// shardBusy reports whether shard k is passing, has a pass coming or
// cools down.
func (h *poolHarness) shardBusy(k int) bool {
	h.pool.mu.Lock()
	defer h.pool.mu.Unlock()
	return h.pool.shards[k].busy()
}
