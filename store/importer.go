package store

import (
	"encoding/json"
	"errors"
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
	byID := make(map[stream.ID]stream.Spec, len(specs))
	for _, sp := range specs {
		if _, dup := byID[sp.ID()]; dup {
			return res, fmt.Errorf("import: %s: %w", sp.ID(), desired.ErrDuplicate)
		}
		byID[sp.ID()] = sp
	}
	stored := make(map[stream.ID]stream.Spec, len(specs))
	var importRev uint64
	err := s.update(func(tx *bolt.Tx, rev uint64) error {
		// Plan from the transaction: writes batched before this one are
		// in it, not yet in memory.
		cur := map[stream.ID]stream.Spec{}
		if err := tx.Bucket(bucketStreams).ForEach(func(k, v []byte) error {
			var sp stream.Spec
			if err := json.Unmarshal(v, &sp); err != nil {
				return fmt.Errorf("decode stream %q: %w", k, err)
			}
			cur[sp.ID()] = sp
			return nil
		}); err != nil {
			return err
		}
		res = desired.PlanImport(cur, specs, prune)
		importRev = rev
		if len(res.Create)+len(res.Update)+len(res.Delete) == 0 {
			return errNothingToImport // takes no revision, wakes nobody
		}
		if err := desired.ImportOverlap(cur, res, byID); err != nil {
			return err
		}
		for _, sp := range specs {
			if sp.IsRange() {
				s.hasRanges.Store(true)
			}
		}
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
			if err := tx.Bucket(bucketStreams).Delete([]byte(id.String())); err != nil {
				return err
			}
		}
		return nil
	}, func() {
		for _, id := range slices.Concat(res.Create, res.Update) {
			sp := stored[id]
			s.specs[id] = sp
			s.history.Add(desired.Change{Revision: sp.Revision, ID: id, Spec: ptr(sp.Clone())})
		}
		for _, id := range res.Delete {
			delete(s.specs, id)
			s.history.Add(desired.Change{Revision: importRev, ID: id})
		}
	})
	if errors.Is(err, errNothingToImport) {
		res.Revision = s.Revision()
		return res, nil
	}
	if err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", err)
	}
	res.Revision = importRev
	return res, nil
}

// errNothingToImport ends an import whose plan changes nothing.
var errNothingToImport = errors.New("nothing to import")
