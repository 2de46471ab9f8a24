package desired

import "github.com/streamconductor/stream-conductor/stream"

// PlanImport says what importing specs over cur (the streams there are,
// by id) changes: each list sorted, Delete empty unless prune. The store
// plans with it inside its transaction, and the write path for a dry run.
func PlanImport(cur map[stream.ID]stream.Spec, specs []stream.Spec, prune bool) ImportResult {
	res := ImportResult{Create: []stream.ID{}, Update: []stream.ID{}, Delete: []stream.ID{}, Unchanged: []stream.ID{}}
	named := make(map[stream.ID]bool, len(specs))
	for _, sp := range specs {
		id := sp.ID()
		named[id] = true
		switch old, ok := cur[id]; {
		case !ok:
			res.Create = append(res.Create, id)
		case old.SameDesired(sp):
			res.Unchanged = append(res.Unchanged, id)
		default:
			res.Update = append(res.Update, id)
		}
	}
	if prune {
		for id := range cur {
			if !named[id] {
				res.Delete = append(res.Delete, id)
			}
		}
	}
	for _, l := range [][]stream.ID{res.Create, res.Update, res.Delete, res.Unchanged} {
		stream.SortIDs(l)
	}
	return res
}
