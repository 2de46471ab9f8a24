package writes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// Each stream of an import that nginx refuses is undone, whoever waits;
// the others stay as imported.
func TestImportUndoesEachRefusedStream(t *testing.T) {
	for _, caller := range []string{waits, nobody} {
		t.Run(caller, func(t *testing.T) {
			f := newFixture(t)
			for _, sp := range []stream.Spec{tcp(9000, "good:1"), tcp(9001, "good:1")} {
				if _, _, err := f.st.Put(sp, desired.Match{}); err != nil {
					t.Fatal(err)
				}
			}
			specs := []stream.Spec{tcp(9003, "bad.invalid:1"), tcp(9000, "bad.invalid:1"), tcp(9001, "good:1"), tcp(9002, "good:2")}
			res, err := f.p.Import(context.Background(), specs, false, "req-9")
			if err != nil || fmt.Sprint(res.Create) != "[tcp/9002 tcp/9003]" || fmt.Sprint(res.Update) != "[tcp/9000]" {
				t.Fatalf("import: %+v %v", res.ImportResult, err)
			}
			if caller == waits {
				refused := wait(t, res.Pending)
				if len(refused) != 2 || refused[0].ID.String() != "tcp/9003" || refused[1].ID.String() != "tcp/9000" || !refused[0].Undone || !refused[1].Undone {
					t.Fatalf("refusals %+v: want tcp/9003 and tcp/9000, in the import's order, undone", refused)
				}
			}
			eventually(t, "the refused streams undone", func() bool {
				_, err := f.st.Get(stream.MustParseID("tcp/9003"))
				sp, _ := f.st.Get(stream.MustParseID("tcp/9000"))
				return errors.Is(err, desired.ErrNotFound) && sp.Backends[0] == "good:1"
			})
			for id, backend := range map[string]string{"tcp/9001": "good:1", "tcp/9002": "good:2"} {
				if sp, err := f.st.Get(stream.MustParseID(id)); err != nil || sp.Backends[0] != backend {
					t.Fatalf("%s: %+v %v", id, sp, err)
				}
			}
			eventually(t, "two undos reported", func() bool { return len(f.undos.get()) == 2 })
			for _, u := range f.undos.get() {
				if u.By != "req-9" || (u.Stream == "tcp/9000") != (u.Restored != nil) {
					t.Fatalf("undo %+v", u)
				}
			}
		})
	}
}

// interleaved is a desired state in which another write lands just
// before each import.
type interleaved struct {
	desired.State
	before func()
}

func (s interleaved) Import(specs []stream.Spec, prune bool) (desired.ImportResult, error) {
	s.before()
	return s.State.Import(specs, prune)
}

// An import's undo restores what the stream was just before the import,
// even when another write changed it between the start of the import and
// its commit.
func TestImportUndoRestoresTheWriteJustBefore(t *testing.T) {
	var st desired.State
	f := newFixtureWith(t, func(inner desired.State) desired.State {
		st = inner
		return interleaved{State: inner, before: func() {
			if _, _, err := inner.Put(tcp(9000, "between:1"), desired.Match{}); err != nil {
				t.Error(err)
			}
		}}
	})
	if _, _, err := st.Put(tcp(9000, "good:1"), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	res, err := f.p.Import(context.Background(), []stream.Spec{tcp(9000, "bad.invalid:1")}, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if refused := wait(t, res.Pending); len(refused) != 1 || !refused[0].Undone {
		t.Fatalf("refusals %+v", refused)
	}
	if sp, err := st.Get(stream.MustParseID("tcp/9000")); err != nil || sp.Backends[0] != "between:1" {
		t.Fatalf("restored %+v %v: want the write made just before the import", sp, err)
	}
}

// An import is checked whole before anything is written: every spec is
// validated (an id listed twice is refused), then the policy judges each;
// the refusal names the element.
func TestImportCheckedWholeFirst(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs []stream.Spec
		index int
		ok    func(error) bool
	}{
		{"bad backend", []stream.Spec{tcp(9000, "a:1"), tcp(9001, "a;:1")}, 1, func(err error) bool {
			var fe *nginxconf.FieldError
			return errors.As(err, &fe) && fe.Field == "backends"
		}},
		{"listed twice", []stream.Spec{tcp(9000, "a:1"), tcp(9001, "a:1"), tcp(9000, "b:1")}, 2, func(err error) bool { return errors.Is(err, desired.ErrDuplicate) }},
		{"policy after validation", []stream.Spec{tcp(9000, "10.0.0.1:22"), tcp(9005, "a:1")}, 1, func(err error) bool {
			var fe *nginxconf.FieldError
			return errors.As(err, &fe) && fe.Field == "listen"
		}},
		{"policy", []stream.Spec{tcp(9000, "a:1"), tcp(9001, "10.0.0.1:22")}, 1, func(err error) bool {
			var pe *PolicyError
			return errors.As(err, &pe) && errors.Is(err, errRefusedBackend)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			for _, op := range []func() error{
				func() error { _, err := f.p.PlanImport(context.Background(), tc.specs, false); return err },
				func() error { _, err := f.p.Import(context.Background(), tc.specs, false, ""); return err },
			} {
				var ie *ItemError
				if err := op(); !errors.As(err, &ie) || ie.Index != tc.index || !tc.ok(ie.Err) {
					t.Fatalf("error %v, want element %d", err, tc.index)
				}
			}
			if l, rev := f.st.List(); len(l) != 0 || rev != 0 {
				t.Fatalf("a refused import wrote: %d streams, revision %d", len(l), rev)
			}
		})
	}
}

// The plan of an import is what the import then does.
func TestPlanImportIsWhatImportDoes(t *testing.T) {
	f := newFixture(t)
	for _, sp := range []stream.Spec{tcp(9000, "a:1"), tcp(9001, "a:1"), tcp(9002, "a:1")} {
		if _, _, err := f.st.Put(sp, desired.Match{}); err != nil {
			t.Fatal(err)
		}
	}
	specs := []stream.Spec{tcp(9003, "a:1"), tcp(9000, "b:1"), tcp(9001, "a:1")}
	plan, err := f.p.PlanImport(context.Background(), specs, true)
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.p.Import(context.Background(), specs, true, "")
	if err != nil {
		t.Fatal(err)
	}
	plan.Revision = res.Revision
	for _, l := range [][2][]stream.ID{{plan.Create, res.Create}, {plan.Update, res.Update}, {plan.Delete, res.Delete}, {plan.Unchanged, res.Unchanged}} {
		if !slices.Equal(l[0], l[1]) {
			t.Fatalf("plan %+v, import %+v", plan, res.ImportResult)
		}
	}
	if fmt.Sprint(res.Create) != "[tcp/9003]" || fmt.Sprint(res.Delete) != "[tcp/9002]" {
		t.Fatalf("import %+v", res.ImportResult)
	}
}
