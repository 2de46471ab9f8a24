package writes

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// ImportResult is what an import changed and its pending apply.
type ImportResult struct {
	desired.ImportResult
	// Pending settles when the import is applied: its refusals are the
	// imported streams nginx refused, in the order of the import.
	Pending *Pending
}

// checkAll validates every spec (an id listed twice is refused), then
// applies the backend policy to each: the first refused spec is an
// *ItemError and nothing is written.
func (p *Path) checkAll(ctx context.Context, specs []stream.Spec) ([]stream.Spec, error) {
	out := make([]stream.Spec, len(specs))
	seen := make(map[stream.ID]bool, len(specs))
	for i, sp := range specs {
		v, err := p.validate(sp)
		if err != nil {
			return nil, &ItemError{Index: i, ID: sp.ID().String(), Err: err}
		}
		if seen[v.ID()] {
			return nil, &ItemError{Index: i, ID: v.ID().String(), Err: fmt.Errorf("stream %s: %w", v.ID(), desired.ErrDuplicate)}
		}
		seen[v.ID()] = true
		out[i] = v
	}
	for i, sp := range out {
		if err := p.checkPolicy(ctx, sp); err != nil {
			return nil, &ItemError{Index: i, ID: sp.ID().String(), Err: err}
		}
	}
	return out, nil
}

// PlanImport is Import changing nothing: what it would change now.
func (p *Path) PlanImport(ctx context.Context, specs []stream.Spec, prune bool) (desired.ImportResult, error) {
	specs, err := p.checkAll(ctx, specs)
	if err != nil {
		return desired.ImportResult{}, err
	}
	list, _ := p.st.List()
	cur := make(map[stream.ID]stream.Spec, len(list))
	for _, sp := range list {
		cur[sp.ID()] = sp
	}
	return desired.PlanImport(cur, specs, prune), nil
}

// Import makes the desired state hold every spec (and, with prune, no
// other) in one revision, after checking all of them: one refused spec
// refuses the whole import. Once applied, each stream it stored that
// nginx refused is undone, as a Put's would be.
func (p *Path) Import(ctx context.Context, specs []stream.Spec, prune bool, by string) (ImportResult, error) {
	specs, err := p.checkAll(ctx, specs)
	if err != nil {
		return ImportResult{}, err
	}
	before, rev0 := p.st.List()
	before = slices.Clone(before)
	res, err := p.st.Import(specs, prune)
	if err != nil {
		return ImportResult{}, err
	}
	p.log.Info().Int("created", len(res.Create)).Int("updated", len(res.Update)).Int("deleted", len(res.Delete)).
		Uint64("revision", res.Revision).Str("by", by).Msg("imported")
	items := p.imported(before, rev0, specs, res)
	if len(res.Create)+len(res.Update) == 0 {
		return ImportResult{ImportResult: res, Pending: p.observe(res.Revision, items)}, nil
	}
	return ImportResult{ImportResult: res, Pending: p.watch(res.Revision, items, by)}, nil
}

// imported is what to watch after an import: every imported stream in the
// import's order, those it stored with what they replaced. It finds them
// in the changes since the import began, so that a write that slipped in
// between is neither taken for the import's nor clobbered by an undo.
func (p *Path) imported(before []stream.Spec, rev0 uint64, specs []stream.Spec, res desired.ImportResult) []item {
	wrote := make(map[stream.ID]bool, len(res.Create)+len(res.Update))
	for _, id := range slices.Concat(res.Create, res.Update) {
		wrote[id] = true
	}
	prev := func() map[stream.ID]*stream.Spec {
		m := make(map[stream.ID]*stream.Spec, len(before))
		for _, sp := range before {
			m[sp.ID()] = &sp
		}
		return m
	}
	stored, replaced := map[stream.ID]stream.Spec{}, prev()
	if len(wrote) > 0 {
		var err error
		if stored, err = p.importChanges(rev0, specs, wrote, replaced); err != nil {
			// Without its changes, what the import replaced cannot be
			// told from a write that came after it: nothing is undone
			// (a refused stream stays, failed) rather than risk undoing
			// someone else's write.
			p.log.Warn().Err(err).Msg("import: its changes are no longer listed; watching its streams as they stand, undoing none")
			stored, replaced = map[stream.ID]stream.Spec{}, prev()
			clear(wrote)
		}
	}
	items := make([]item, 0, len(specs))
	for _, sp := range specs {
		id := sp.ID()
		cur, found := stored[id]
		if !found {
			var err error
			if cur, err = p.st.Get(id); err != nil {
				continue
			}
		}
		items = append(items, item{stored: cur, prev: replaced[id], undo: wrote[id]})
	}
	return items
}

// importChanges walks the changes after rev0 to the import's revision:
// the first at which every stream the import wrote became what it asked.
// It returns the streams as the import stored them, and leaves in prev
// what each was just before.
func (p *Path) importChanges(rev0 uint64, specs []stream.Spec, wrote map[stream.ID]bool, prev map[stream.ID]*stream.Spec) (map[stream.ID]stream.Spec, error) {
	changes, err := p.st.Since(rev0)
	if err != nil {
		return nil, err
	}
	want := make(map[stream.ID]stream.Spec, len(specs))
	for _, sp := range specs {
		want[sp.ID()] = sp
	}
	for i := 0; i < len(changes); {
		j := i
		at := map[stream.ID]*stream.Spec{}
		for ; j < len(changes) && changes[j].Revision == changes[i].Revision; j++ {
			at[changes[j].ID] = changes[j].Spec
		}
		if isImport(at, wrote, want) {
			out := make(map[stream.ID]stream.Spec, len(wrote))
			for id := range wrote {
				out[id] = *at[id]
			}
			return out, nil
		}
		for id, sp := range at {
			prev[id] = sp
		}
		i = j
	}
	return nil, errors.New("the import's revision is not among the changes")
}

func isImport(at map[stream.ID]*stream.Spec, wrote map[stream.ID]bool, want map[stream.ID]stream.Spec) bool {
	for id := range wrote {
		if sp := at[id]; sp == nil || !sp.SameDesired(want[id]) {
			return false
		}
	}
	return true
}
