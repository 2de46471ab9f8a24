package writes

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// The callers a write may have: one that waits for the answer, one that
// went away while the write was being applied (a client that
// disconnected), and none at all (?wait=false).
const (
	waits  = "waits"
	gone   = "went away"
	nobody = "nobody waits"
)

// A write nginx refuses is undone by the write path itself, whoever
// waits: a new stream is removed, a replaced one restored, and the undo
// is reported once with who asked for the write.
func TestRefusedWriteIsUndoneWhoeverWaits(t *testing.T) {
	for _, tc := range []struct {
		existing string // backend of the stream before the write; "" none
		caller   string
	}{
		{"", waits}, {"", gone}, {"", nobody},
		{"good:1", waits}, {"good:1", gone}, {"good:1", nobody},
	} {
		t.Run(tc.existing+" "+tc.caller, func(t *testing.T) {
			f := newFixture(t)
			if tc.existing != "" {
				if _, _, err := f.st.Put(tcp(9001, tc.existing), desired.Match{}); err != nil {
					t.Fatal(err)
				}
			}
			gate := make(chan struct{})
			f.ap.gate = gate
			res, err := f.p.Put(context.Background(), tcp(9001, "bad.invalid:1"), desired.Match{}, "req-7")
			if err != nil || !res.Changed || res.Created != (tc.existing == "") {
				t.Fatalf("put: %+v %v", res, err)
			}
			switch tc.caller {
			case waits:
				close(gate)
				refused := wait(t, res.Pending)
				if len(refused) != 1 || !refused[0].Undone || refused[0].ID.String() != "tcp/9001" || refused[0].Reason != `host not found in upstream "bad.invalid:1"` {
					t.Fatalf("refusals %+v", refused)
				}
			case gone:
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				if _, err := res.Pending.Wait(ctx); !errors.Is(err, context.Canceled) {
					t.Fatalf("wait of a caller that went away: %v", err)
				}
				close(gate)
			case nobody:
				close(gate)
			}
			eventually(t, "the refused write undone", func() bool {
				sp, err := f.st.Get(stream.MustParseID("tcp/9001"))
				if tc.existing == "" {
					return errors.Is(err, desired.ErrNotFound)
				}
				return err == nil && sp.Backends[0] == tc.existing
			})
			eventually(t, "the undo reported", func() bool { return len(f.undos.get()) == 1 })
			u := f.undos.get()[0]
			if u.Stream != "tcp/9001" || u.Refused.Backends[0] != "bad.invalid:1" || u.By != "req-7" || u.Reason == "" ||
				(u.Restored == nil) != (tc.existing == "") || (u.Restored != nil && u.Restored.Backends[0] != tc.existing) {
				t.Fatalf("undo %+v", u)
			}
		})
	}
}

// An undo carries a precondition on the refused write's revision: a write
// that came after it is never clobbered.
func TestUndoNeverClobbersALaterWrite(t *testing.T) {
	f := newFixture(t)
	gate := make(chan struct{})
	f.ap.gate = gate
	first, err := f.p.Put(context.Background(), tcp(9001, "x:1"), desired.Match{}, "req-1")
	if err != nil {
		t.Fatal(err)
	}
	f.ap.rejectRev[first.Stored.Revision] = "refused"
	second, err := f.p.Put(context.Background(), tcp(9001, "y:1"), desired.Match{}, "req-2")
	if err != nil {
		t.Fatal(err)
	}
	close(gate)
	refused := wait(t, first.Pending)
	if len(refused) != 1 || refused[0].Undone {
		t.Fatalf("refusals of the first write %+v: want one, not undone", refused)
	}
	if r := wait(t, second.Pending); len(r) != 0 {
		t.Fatalf("the later write refused: %+v", r)
	}
	if sp, err := f.st.Get(stream.MustParseID("tcp/9001")); err != nil || sp.Backends[0] != "y:1" {
		t.Fatalf("stored %+v %v: the later write was clobbered", sp, err)
	}
	if u := f.undos.get(); len(u) != 0 {
		t.Fatalf("undos %+v", u)
	}
}

// Every rule is checked before anything is written, and each refusal
// comes back typed: a field error, the policy's own error, a held port,
// or the desired state's sentinel.
func TestWritesRefusedBeforeCommit(t *testing.T) {
	f := newFixture(t)
	if _, _, err := f.st.Put(tcp(9000, "keep:1"), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	_, rev := f.st.List()
	field := func(name string) func(error) bool {
		return func(err error) bool {
			var fe *nginxconf.FieldError
			return errors.As(err, &fe) && fe.Field == name
		}
	}
	is := func(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }
	policy := func(err error) bool {
		var pe *PolicyError
		return errors.As(err, &pe) && errors.Is(err, errRefusedBackend)
	}
	held := func(err error) bool {
		var h *PortHeldError
		return errors.As(err, &h) && h.Port == 9008
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		op   func() error
		ok   func(error) bool
	}{
		{"bad backend", func() error { _, err := f.p.Put(ctx, tcp(9001, "a:1;"), desired.Match{}, ""); return err }, field("backends")},
		{"outside the range", func() error { _, err := f.p.Put(ctx, tcp(9010, "a:1"), desired.Match{}, ""); return err }, field("listen")},
		{"the API's port", func() error { _, err := f.p.Put(ctx, tcp(9005, "a:1"), desired.Match{}, ""); return err }, field("listen")},
		{"policy", func() error { _, err := f.p.Put(ctx, tcp(9001, "10.0.0.1:22"), desired.Match{}, ""); return err }, policy},
		{"held port", func() error { _, err := f.p.Put(ctx, tcp(9008, "a:1"), desired.Match{}, ""); return err }, held},
		{"create only, exists", func() error { _, err := f.p.Put(ctx, tcp(9000, "a:1"), desired.Match{Absent: true}, ""); return err }, is(desired.ErrExists)},
		{"stale revision", func() error {
			_, err := f.p.Put(ctx, tcp(9000, "a:1"), desired.Match{Revision: rev + 5}, "")
			return err
		}, is(desired.ErrRevisionMismatch)},
		{"create, policy", func() error { _, err := f.p.Create(ctx, tcp(0, "10.0.0.1:22"), ""); return err }, policy},
		{"create, bad backend", func() error { _, err := f.p.Create(ctx, tcp(0, "a"), ""); return err }, field("backends")},
		{"delete, stale revision", func() error {
			_, _, err := f.p.Delete(stream.MustParseID("tcp/9000"), desired.Match{Revision: rev + 5})
			return err
		}, is(desired.ErrRevisionMismatch)},
		{"delete, missing", func() error { _, _, err := f.p.Delete(stream.MustParseID("tcp/9003"), desired.Match{}); return err }, is(desired.ErrNotFound)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !tc.ok(err) {
				t.Fatalf("error %v (%T)", err, err)
			}
			if _, now := f.st.List(); now != rev {
				t.Fatalf("revision %d -> %d: a refused write wrote", rev, now)
			}
		})
	}
}

// A spec equal to the stored one writes nothing, and its answer still
// says when nginx refuses the stream as it stands (nothing to undo).
func TestUnchangedPutWritesNothing(t *testing.T) {
	f := newFixture(t)
	stored, _, err := f.st.Put(tcp(9001, "bad.invalid:1"), desired.Match{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.p.Put(context.Background(), tcp(9001, "bad.invalid:1"), desired.Match{Revision: stored.Revision}, "")
	if err != nil || res.Changed || res.Stored.Revision != stored.Revision {
		t.Fatalf("unchanged put: %+v %v", res, err)
	}
	refused := wait(t, res.Pending)
	if len(refused) != 1 || refused[0].Undone {
		t.Fatalf("refusals %+v: want one, not undone", refused)
	}
	if _, err := f.st.Get(stream.MustParseID("tcp/9001")); err != nil {
		t.Fatal("an unchanged write was undone")
	}
}

// One free-port loop: the dry run, the free-port list and the allocation
// agree, and none gives the reserved port or one another process holds.
func TestCreateAllocatesWhatThePlanSays(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	want := []int{9000, 9001, 9002, 9003, 9004, 9006, 9007, 9009}
	if free := f.p.FreePorts(tcp(0, ""), 0); len(free) != len(want) {
		t.Fatalf("free ports %v, want %v", free, want)
	}
	for _, port := range want {
		plan, err := f.p.PlanCreate(ctx, tcp(0, "a:1"))
		if err != nil || plan.Listen != port {
			t.Fatalf("plan: port %d %v, want %d", plan.Listen, err, port)
		}
		res, err := f.p.Create(ctx, tcp(0, "a:1"), "")
		if err != nil || res.Stored.Listen != port || !res.Created {
			t.Fatalf("create: %+v %v, want port %d", res.Stored, err, port)
		}
		if r := wait(t, res.Pending); len(r) != 0 {
			t.Fatalf("refused: %+v", r)
		}
	}
	if _, err := f.p.PlanCreate(ctx, tcp(0, "a:1")); !errors.Is(err, desired.ErrNoFreePort) {
		t.Fatalf("plan on a full range: %v", err)
	}
	if _, err := f.p.Create(ctx, tcp(0, "a:1"), ""); !errors.Is(err, desired.ErrNoFreePort) {
		t.Fatalf("create on a full range: %v", err)
	}
}

// A create on a range whose first port is reserved validates against the
// reserved-port rule and skips it; without a range there is nothing to
// allocate.
func TestCreateKeepsTheReservedPortRule(t *testing.T) {
	f := newFixture(t)
	f.p.cfg.Reserved = []int{9000}
	res, err := f.p.Create(context.Background(), tcp(0, "a:1"), "")
	if err != nil || res.Stored.Listen != 9001 {
		t.Fatalf("create: %+v %v", res.Stored, err)
	}
	f.p.cfg.PortMin, f.p.cfg.PortMax = 0, 0
	var fe *nginxconf.FieldError
	if _, err := f.p.Create(context.Background(), tcp(0, "a:1"), ""); !errors.As(err, &fe) || fe.Field != "listen" {
		t.Fatalf("create without PORT_RANGE: %v", err)
	}
}

// The policy judges every route's backends and the default of a routed
// stream, and names the one it refused.
func TestPolicyChecksRouteBackends(t *testing.T) {
	routed := func(def string, second string) stream.Spec {
		s := stream.Spec{Protocol: stream.TCP, Listen: 9001, Routes: []stream.Route{
			{ServerName: "a.example", Backends: []string{"a:1"}},
			{ServerName: "b.example", Backends: []string{"b:1", second}},
		}}
		if def != "" {
			s.Backends = []string{def}
		}
		return s
	}
	for _, tc := range []struct {
		name, field string
		spec        stream.Spec
	}{
		{"route backend", "routes[1].backends", routed("", "10.0.0.1:22")},
		{"default", "default", routed("10.0.0.1:22", "c:1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			_, err := f.p.Check(context.Background(), tc.spec)
			var pe *PolicyError
			if !errors.As(err, &pe) || !errors.Is(err, errRefusedBackend) || pe.Field != tc.field {
				t.Fatalf("err = %v (%+v), want a policy refusal of %s", err, pe, tc.field)
			}
			if l, _ := f.st.List(); len(l) != 0 {
				t.Fatal("a refused spec was stored")
			}
		})
	}
	if _, err := newFixture(t).p.Check(context.Background(), routed("d:1", "c:1")); err != nil {
		t.Fatalf("allowed routes refused: %v", err)
	}
}

// A stream whose backend is the stream itself (the policy's CheckLoop)
// is refused as invalid input (400) in the field of that backend list,
// whatever the operation, and nothing is stored; the same backend from
// another port is no loop.
func TestSelfLoopIsInvalidInput(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	routed := stream.Spec{Protocol: stream.TCP, Listen: 9001, Routes: []stream.Route{
		{ServerName: "a.example", Backends: []string{"a:1", "127.0.0.9:9001"}}}}
	for _, tc := range []struct {
		name, field string
		write       func() error
	}{
		{"put", "backends", func() error {
			_, err := f.p.Put(ctx, tcp(9001, "127.0.0.9:9001"), desired.Match{}, "t")
			return err
		}},
		{"check a route", "routes[0].backends", func() error {
			_, err := f.p.Check(ctx, routed)
			return err
		}},
		{"range", "backends", func() error {
			_, err := f.p.Put(ctx, stream.Spec{Protocol: stream.TCP, Listen: 9000, ListenEnd: 9003, Backends: []string{"127.0.0.9:9001"}}, desired.Match{}, "t")
			return err
		}},
	} {
		err := tc.write()
		var fe *nginxconf.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(fe.Message, errLoop.Error()) {
			t.Errorf("%s: %v, want a field error in %s saying %q", tc.name, err, tc.field, errLoop)
		}
	}
	if l, _ := f.st.List(); len(l) != 0 {
		t.Fatalf("a self-loop was stored: %v", l)
	}
	if _, err := f.p.Put(ctx, tcp(9002, "127.0.0.9:9001"), desired.Match{}, "t"); err != nil {
		t.Fatalf("the same backend from another port: %v", err)
	}
}
