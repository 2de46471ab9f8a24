package conformance

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

func importAllOrNothing(t *testing.T, st desired.State) {
	keep := mustPut(t, st, spec(9000, "10.0.0.1:1"), desired.Match{})
	mustPut(t, st, spec(9001, "10.0.0.1:1"), desired.Match{})
	_, before := st.List()
	// A body naming one stream twice is refused whole.
	_, err := st.Import([]stream.Spec{spec(9002, "10.0.0.2:1"), spec(9003, "10.0.0.3:1"), spec(9002, "10.0.0.4:1")}, false)
	if !errors.Is(err, desired.ErrDuplicate) {
		t.Fatalf("import with a duplicate: %v, want ErrDuplicate", err)
	}
	if _, after := st.List(); after != before || len(listed(st)) != 2 {
		t.Fatalf("a refused import changed the state: revision %d → %d, %v", before, after, listed(st))
	}
	res, err := st.Import([]stream.Spec{spec(9000, "10.0.0.1:1"), spec(9002, "10.0.0.2:1"), spec(9003, "10.0.0.3:1")}, true)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if !slices.Equal(res.Create, []stream.ID{tcp(9002), tcp(9003)}) || !slices.Equal(res.Delete, []stream.ID{tcp(9001)}) ||
		!slices.Equal(res.Unchanged, []stream.ID{tcp(9000)}) || len(res.Update) != 0 {
		t.Fatalf("import result %+v", res)
	}
	if got, _ := st.Get(tcp(9000)); got.Revision != keep.Revision {
		t.Fatalf("an unchanged stream got a new revision: %d → %d", keep.Revision, got.Revision)
	}
	if want := map[string]string{"tcp/9000": "10.0.0.1:1", "tcp/9002": "10.0.0.2:1", "tcp/9003": "10.0.0.3:1"}; !mapsEqual(listed(st), want) {
		t.Fatalf("after the import: %v, want %v", listed(st), want)
	}
}

func importNeverHalfDone(t *testing.T, st desired.State) {
	const n = 200
	specs := make([]stream.Spec, n)
	for i := range specs {
		specs[i] = spec(10000+i, "10.0.0.1:1")
	}
	stop := make(chan struct{})
	var bad []int
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 100000 {
			select {
			case <-stop:
				return
			default:
			}
			if l, _ := st.List(); len(l) != 0 && len(l) != n {
				bad = append(bad, len(l))
			}
		}
	})
	if _, err := st.Import(specs, false); err != nil {
		t.Fatalf("import: %v", err)
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("a reader saw the import half done: list lengths %v", bad[:min(len(bad), 5)])
	}
	if l, _ := st.List(); len(l) != n {
		t.Fatalf("%d streams after the import, want %d", len(l), n)
	}
}

// importOfNothing: an import that changes nothing takes no revision and
// lists no change; one that changes something reports the revision of its
// changes.
func importOfNothing(t *testing.T, st desired.State) {
	specs := []stream.Spec{spec(9000, "10.0.0.1:1"), spec(9001, "10.0.0.2:1")}
	res, err := st.Import(specs, false)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	_, rev := st.List()
	if res.Revision != rev {
		t.Fatalf("the import reports revision %d, the list says %d", res.Revision, rev)
	}
	res, err = st.Import(specs, false)
	if err != nil || len(res.Unchanged) != 2 {
		t.Fatalf("import of the same: %+v, %v", res, err)
	}
	if _, after := st.List(); after != rev || res.Revision != rev {
		t.Fatalf("an import that changed nothing moved the revision %d -> %d (reported %d)", rev, after, res.Revision)
	}
	if changes, err := st.Since(rev); err != nil || len(changes) != 0 {
		t.Fatalf("an import that changed nothing left changes %+v, %v", changes, err)
	}
}
