package writes

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// sameRange is a port_mode same range to host, its ports left to the
// allocation.
func sameRange(host string) stream.Spec {
	return stream.Spec{Protocol: stream.TCP, PortMode: stream.PortModeSame, Backends: []string{host}}
}

// A range goes on the first run of free ports, as its plan says: past a
// stream's port, a range's ports, a reserved port and a port another
// process holds; the same-port backend takes the run's first port; when
// no run fits, ErrNoFreePort.
func TestCreateRangeFirstFit(t *testing.T) {
	f := newFixture(t) // 9000-9009, 9005 reserved, 9008 held
	ctx := context.Background()
	if _, _, err := f.st.Put(tcp(9001, "a:1"), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"9002-9003", "9006-9007"} {
		plan, err := f.p.PlanCreateRange(ctx, sameRange("10.0.0.5"), 2)
		if err != nil || plan.Ports() != want {
			t.Fatalf("plan: %s %v, want %s", plan.Ports(), err, want)
		}
		res, err := f.p.CreateRange(ctx, sameRange("10.0.0.5"), 2, "")
		if err != nil || res.Stored.Ports() != want || !res.Created || res.Stored.Backends[0] != "10.0.0.5:"+want[:4] {
			t.Fatalf("create: %+v %v, want %s", res.Stored, err, want)
		}
		if r := wait(t, res.Pending); len(r) != 0 {
			t.Fatalf("refused: %+v", r)
		}
	}
	if _, err := f.p.PlanCreateRange(ctx, sameRange("10.0.0.5"), 2); !errors.Is(err, desired.ErrNoFreePort) {
		t.Fatalf("plan with no run of 2 left: %v", err)
	}
	if _, err := f.p.CreateRange(ctx, sameRange("10.0.0.5"), 2, ""); !errors.Is(err, desired.ErrNoFreePort) {
		t.Fatalf("create with no run of 2 left: %v", err)
	}
	// The single ports left are the ones no range took.
	if free := f.p.FreePorts(tcp(0, ""), 0); len(free) != 3 || free[0] != 9000 || free[1] != 9004 || free[2] != 9009 {
		t.Fatalf("free ports %v, want [9000 9004 9009]", free)
	}
}

// A range is not allocated in the kernel's ephemeral ports unless they
// are reserved from it.
func TestCreateRangeSkipsEphemeralPorts(t *testing.T) {
	f := newFixture(t)
	f.p.cfg.Ephemeral = procfs.PortRange{Lo: 9000, Hi: 9003}
	f.p.cfg.KernelReserved = []procfs.PortRange{{Lo: 9002, Hi: 9003}}
	res, err := f.p.CreateRange(context.Background(), sameRange("10.0.0.5"), 3, "")
	if err != nil || res.Stored.Ports() != "9002-9004" {
		t.Fatalf("create: %+v %v, want 9002-9004", res.Stored, err)
	}
}

// A size out of 2..MaxRangePorts, or no PORT_RANGE, is a field error;
// a bad spec is refused as a PUT would refuse it; nothing is stored.
func TestCreateRangeRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, n := range []int{0, 1, stream.MaxRangePorts + 1} {
		var fe *nginxconf.FieldError
		if _, err := f.p.CreateRange(ctx, sameRange("10.0.0.5"), n, ""); !errors.As(err, &fe) || fe.Field != "ports" {
			t.Errorf("%d ports: %v, want a field error on ports", n, err)
		}
	}
	two := sameRange("10.0.0.5")
	two.Backends = append(two.Backends, "10.0.0.6")
	if _, err := f.p.CreateRange(ctx, two, 2, ""); err == nil {
		t.Error("port_mode same with two backends was allocated")
	}
	f.p.cfg.PortMin, f.p.cfg.PortMax = 0, 0
	if _, err := f.p.CreateRange(ctx, sameRange("10.0.0.5"), 2, ""); !errors.Is(err, errNoRange) {
		t.Errorf("without PORT_RANGE: %v", err)
	}
	if specs, _ := f.st.List(); len(specs) != 0 {
		t.Fatalf("a refused allocation stored %v", specs)
	}
}

// Concurrent range allocations never share a port: of ten allocations
// of 10 ports in 9000-9099 (9005 reserved, 9008 held: 9 runs fit), nine
// get disjoint runs and one gets ErrNoFreePort.
func TestCreateRangeConcurrent(t *testing.T) {
	f := newFixture(t)
	f.p.cfg.PortMax = 9099
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.p.CreateRange(context.Background(), sameRange("10.0.0.5"), 10, "")
		}()
	}
	wg.Wait()
	full := 0
	for _, err := range errs {
		switch {
		case errors.Is(err, desired.ErrNoFreePort):
			full++
		case err != nil:
			t.Fatalf("allocation: %v", err)
		}
	}
	specs, _ := f.st.List()
	if full != 1 || len(specs) != 9 {
		t.Fatalf("%d got no run, %d stored; want 1 and 9", full, len(specs))
	}
	if err := desired.CheckOverlaps(specs); err != nil {
		t.Fatalf("concurrent allocations overlap: %v", err)
	}
	for _, sp := range specs {
		if sp.Listen < 9009 || sp.PortCount() != 10 {
			t.Fatalf("run %s: want 10 ports from 9009 on", sp.Ports())
		}
	}
}
