package etcdstate

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/writes"
)

// appliedAtOnce is a writes.Applier for which every write is applied at
// once and every port is free.
type appliedAtOnce struct{}

func (appliedAtOnce) WaitApplied(context.Context, uint64, []stream.Spec) error { return nil }
func (appliedAtOnce) Refused(stream.ID, uint64) (string, bool)                 { return "", false }
func (appliedAtOnce) BindConflict(stream.Spec) error                           { return nil }
func (appliedAtOnce) Leftover(stream.ID) error                                 { return nil }

// Range allocations (POST /v1/streams {"ports": N}) on two nodes at once
// never share a port: each is stored create-only with the port check in
// etcd's transaction, and a lost run retries the next. Twelve
// allocations of 10 ports in 20000-20099: ten get disjoint runs, two get
// ErrNoFreePort.
func TestRangeAllocationAcrossNodes(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	var paths []*writes.Path
	for _, st := range []*State{openState(t, sharedClient, prefix, Options{}), openState(t, newClient(t), prefix, Options{})} {
		p := writes.New(writes.Config{PortMin: 20000, PortMax: 20099, Log: zerolog.Nop()}, st, appliedAtOnce{}, nil)
		t.Cleanup(p.Close)
		paths = append(paths, p)
	}
	sp := stream.Spec{Protocol: stream.TCP, PortMode: stream.PortModeSame, Backends: []string{"10.0.0.5"}}
	results := make([]writes.Result, 12)
	errs := make([]error, 12)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = paths[i%2].CreateRange(context.Background(), sp, 10, "")
		}()
	}
	wg.Wait()
	var stored []stream.Spec
	full := 0
	for i, err := range errs {
		switch {
		case errors.Is(err, desired.ErrNoFreePort):
			full++
		case err != nil:
			t.Fatalf("allocation %d: %v", i, err)
		default:
			stored = append(stored, results[i].Stored)
		}
	}
	if len(stored) != 10 || full != 2 {
		t.Fatalf("%d runs stored, %d found none; want 10 and 2", len(stored), full)
	}
	if err := desired.CheckOverlaps(stored); err != nil {
		t.Fatalf("concurrent allocations on two nodes overlap: %v", err)
	}
	for _, s := range stored {
		if s.PortCount() != 10 || s.Listen < 20000 || s.LastPort() > 20099 {
			t.Fatalf("run %s", s.Ports())
		}
	}
}
