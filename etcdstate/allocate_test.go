package etcdstate

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// Twenty-four allocators on three nodes (three clients, three States, one
// prefix) at once: each gets a port of its own within the range, none is
// refused for contention alone, and the transactions they send together
// stay near-linear in their number: a lost transaction tells the loser
// which ports went, and the losers spread over the free ports rather than
// all trying the next one.
func TestAllocateUnderContention(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	nodes := []*State{openState(t, sharedClient, prefix, Options{}), openState(t, newClient(t), prefix, Options{}),
		openState(t, newClient(t), prefix, Options{})}
	const allocators, lo, hi = 24, 9000, 9099
	var (
		mu   sync.Mutex
		got  []int
		wg   sync.WaitGroup
		gate = make(chan struct{})
	)
	for i := range allocators {
		wg.Go(func() {
			<-gate // all at once
			sp, err := nodes[i%len(nodes)].Allocate(spec(0, fmt.Sprintf("10.0.0.%d:1", i+1)), lo, hi, nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("allocator %d: %v", i, err)
				return
			}
			got = append(got, sp.Listen)
		})
	}
	close(gate)
	wg.Wait()
	slices.Sort(got)
	if len(got) != allocators || len(slices.Compact(slices.Clone(got))) != allocators || got[0] < lo || got[len(got)-1] > hi {
		t.Fatalf("24 allocators got ports %v; want 24 distinct ports in %d-%d", got, lo, hi)
	}
	var txns int64
	for _, n := range nodes {
		txns += n.allocTxns.Load()
	}
	// One each at best; a walk from the bottom of the range costs about
	// n²/2 (300 for 24) when they all start together.
	if limit := int64(3 * allocators); txns > limit {
		t.Fatalf("24 allocations sent %d transactions; want at most %d", txns, limit)
	}
	t.Logf("24 allocations on 3 nodes: %d transactions", txns)
}

// Without contention the first free port is taken, with one transaction.
func TestAllocateTakesTheFirstFreePort(t *testing.T) {
	needEtcd(t)
	st := openState(t, sharedClient, newPrefix(), Options{})
	for _, port := range []int{9000, 9002} {
		if _, _, err := st.Put(spec(port, "10.0.0.1:1"), desired.Match{}); err != nil {
			t.Fatal(err)
		}
	}
	sp, err := st.Allocate(spec(0, "10.0.0.2:1"), 9000, 9009, nil)
	if err != nil || sp.Listen != 9001 || sp.Protocol != stream.TCP {
		t.Fatalf("allocate = %v, %v; want tcp/9001", sp.ID(), err)
	}
	if n := st.allocTxns.Load(); n != 1 {
		t.Fatalf("allocate sent %d transactions; want 1", n)
	}
}
