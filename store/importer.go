package store

import (
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// ImportResult says what an import changed, by stream id.
type ImportResult = desired.ImportResult

// Import creates or replaces every spec in specs and, with prune, deletes
// the streams specs does not name, all in one transaction: either all of
// it is stored or none. Specs equal to what is stored are left as they are.
func (s *Store) Import(specs []stream.Spec, prune bool) (ImportResult, error) {
	var res ImportResult
	byID := make(map[string]stream.Spec, len(specs))
	for _, sp := range specs {
		if _, dup := byID[sp.ID()]; dup {
			return res, fmt.Errorf("import: %s: %w", sp.ID(), desired.ErrDuplicate)
		}
		byID[sp.ID()] = sp
	}
	stored := make(map[string]stream.Spec, len(specs))
	var importRev uint64
	err := s.update(func(tx *bolt.Tx, rev uint64) error {
		// Plan from the transaction: writes batched before this one are
		// in it, not yet in memory.
		cur := map[string]stream.Spec{}
		if err := tx.Bucket(bucketStreams).ForEach(func(k, v []byte) error {
			var sp stream.Spec
			if err := json.Unmarshal(v, &sp); err != nil {
				return fmt.Errorf("decode stream %q: %w", k, err)
			}
			cur[string(k)] = sp
			return nil
		}); err != nil {
			return err
		}
		res = plan(cur, specs, prune)
		importRev = rev
		clear(stored)
		for _, id := range slices.Concat(res.Create, res.Update) {
			cur, err := get(tx, id)
			if err != nil {
				return err
			}
			stored[id] = s.stamp(byID[id], cur, rev)
			if err := put(tx, stored[id]); err != nil {
				return err
			}
		}
		for _, id := range res.Delete {
			if err := tx.Bucket(bucketStreams).Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	}, func() {
		for _, id := range slices.Concat(res.Create, res.Update) {
			sp := stored[id]
			s.specs[id] = sp
			s.history.add(desired.Change{Revision: sp.Revision, ID: id, Spec: ptr(sp.Clone())})
		}
		for _, id := range res.Delete {
			delete(s.specs, id)
			s.history.add(desired.Change{Revision: importRev, ID: id})
		}
	})
	if err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", err)
	}
	res.Revision = s.Revision()
	return res, nil
}

func plan(cur map[string]stream.Spec, specs []stream.Spec, prune bool) ImportResult {
	res := ImportResult{Create: []string{}, Update: []string{}, Delete: []string{}, Unchanged: []string{}}
	named := make(map[string]bool, len(specs))
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
	for _, l := range [][]string{res.Create, res.Update, res.Delete, res.Unchanged} {
		slices.Sort(l)
	}
	return res
}
