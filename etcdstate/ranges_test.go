package etcdstate

import (
	"errors"
	"sync"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

func rangeOf(first, last int) stream.Spec {
	return stream.Spec{Protocol: stream.TCP, Listen: first, ListenEnd: last, PortMode: stream.PortModeFixed, Backends: []string{"10.0.0.1:1"}}
}

// Two nodes: a port that one node puts inside a range the other just
// wrote is refused, whether or not its local copy has the range yet; and
// of a range and a single port inside it written at once, exactly one is
// stored.
func TestRangesAcrossNodes(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	a := openState(t, sharedClient, prefix, Options{})
	b := openState(t, newClient(t), prefix, Options{})
	for i := range 20 {
		first := 10000 + i*100
		if _, _, err := a.Put(rangeOf(first, first+49), desired.Match{}); err != nil {
			t.Fatal(err)
		}
		_, _, err := b.Put(spec(first+49, "10.0.0.1:1"), desired.Match{})
		if !errors.Is(err, desired.ErrPortConflict) {
			t.Fatalf("round %d: a port inside the other node's new range: %v", i, err)
		}
		var errs [2]error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _, _, errs[0] = a.Put(rangeOf(first+50, first+99), desired.Match{}) }()
		go func() { defer wg.Done(); _, _, errs[1] = b.Put(spec(first+75, "10.0.0.1:1"), desired.Match{}) }()
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: a range and a port inside it at once: %v, %v; want exactly one stored", i, errs[0], errs[1])
		}
		for _, err := range errs {
			if err != nil && !errors.Is(err, desired.ErrPortConflict) {
				t.Fatalf("round %d: %v", i, err)
			}
		}
	}
}
