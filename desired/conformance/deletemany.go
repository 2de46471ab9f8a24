package conformance

import (
	"errors"
	"slices"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// deleteManyInOneRevision: DeleteMany deletes every stream still at its
// item's revision in one revision, above every one before; a stream
// replaced since its item's revision (a renew) and one already gone are
// skipped, not errors; a stream not named stays.
func deleteManyInOneRevision(t *testing.T, st desired.State) {
	var due []desired.Conditional
	for port := 9000; port < 9004; port++ {
		sp := mustPut(t, st, spec(port, "10.0.0.1:1"), desired.Match{})
		due = append(due, desired.Conditional{ID: sp.ID(), Revision: sp.Revision})
	}
	other := mustPut(t, st, spec(9010, "10.0.0.1:1"), desired.Match{})
	renewed := mustPut(t, st, spec(9001, "10.0.0.2:1"), desired.Match{}) // after the item's revision
	if _, _, err := st.Delete(tcp(9002), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	_, before := st.List()
	deleted, rev, err := st.DeleteMany(append(due, desired.Conditional{ID: tcp(9999), Revision: 1}))
	if err != nil {
		t.Fatalf("DeleteMany: %v", err)
	}
	if rev <= before {
		t.Fatalf("DeleteMany at revision %d, not above the state's %d", rev, before)
	}
	var ids []stream.ID
	for _, sp := range deleted {
		ids = append(ids, sp.ID())
	}
	if want := []stream.ID{tcp(9000), tcp(9003)}; !slices.Equal(ids, want) {
		t.Fatalf("DeleteMany deleted %v, want %v", ids, want)
	}
	if deleted[0].Revision != due[0].Revision || deleted[0].Backends[0] != "10.0.0.1:1" {
		t.Fatalf("DeleteMany returned %+v, want the stream as it was deleted", deleted[0])
	}
	changes, err := st.Since(before)
	if err != nil || len(changes) != 2 {
		t.Fatalf("changes after DeleteMany: %+v, %v; want 2", changes, err)
	}
	for _, c := range changes {
		if c.Revision != rev || c.Spec != nil {
			t.Fatalf("change %+v, want a deletion at revision %d", c, rev)
		}
	}
	if list, r := st.List(); r != rev || len(list) != 2 {
		t.Fatalf("list after DeleteMany: %d streams at revision %d, want 2 at %d", len(list), r, rev)
	}
	if got, err := st.Get(tcp(9001)); err != nil || got.Revision != renewed.Revision {
		t.Fatalf("the stream renewed meanwhile: %+v, %v", got, err)
	}
	if _, err := st.Get(other.ID()); err != nil {
		t.Fatalf("a stream not named: %v", err)
	}
	for _, id := range []stream.ID{tcp(9000), tcp(9003)} {
		if _, err := st.Get(id); !errors.Is(err, desired.ErrNotFound) {
			t.Fatalf("get %s after DeleteMany: %v, want ErrNotFound", id, err)
		}
	}
}

// deleteManyOfNothing: a DeleteMany whose every item is gone or changed
// deletes nothing and takes no revision.
func deleteManyOfNothing(t *testing.T, st desired.State) {
	a := mustPut(t, st, spec(9000, "10.0.0.1:1"), desired.Match{})
	mustPut(t, st, spec(9000, "10.0.0.2:1"), desired.Match{})
	_, before := st.List()
	deleted, rev, err := st.DeleteMany([]desired.Conditional{{ID: a.ID(), Revision: a.Revision}, {ID: tcp(9001), Revision: a.Revision}})
	if err != nil || len(deleted) != 0 || rev != 0 {
		t.Fatalf("DeleteMany of nothing: %+v at %d, %v; want none at 0", deleted, rev, err)
	}
	if _, after := st.List(); after != before {
		t.Fatalf("a DeleteMany of nothing moved the revision from %d to %d", before, after)
	}
}
