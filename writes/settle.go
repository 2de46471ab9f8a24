package writes

import (
	"context"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// item is a stream a write is waiting for: stored is what the write left
// (or found, when it changed nothing), prev what it replaced; undo says
// the write stored it, so that a refusal is undone.
type item struct {
	stored stream.Spec
	prev   *stream.Spec
	undo   bool
}

// Refusal is a stream of a write that nginx refused.
type Refusal struct {
	ID stream.ID
	// Reason is nginx's message.
	Reason string
	// Undone: the write was taken back (the previous spec restored, or
	// the new stream removed). False when the write changed nothing, or
	// when the stream changed again since.
	Undone bool
}

// Pending is a write waiting to be applied. Whether or not anyone calls
// Wait, a write that stored something is watched, detached from its
// caller, for at most the undo window: what nginx refused is undone.
type Pending struct {
	p     *Path
	rev   uint64
	items []item
	// done is closed once the watch has settled (nil: no watch, Wait
	// checks by itself); refused and err are set before.
	done    chan struct{}
	refused []Refusal
	err     error
	// deleted, when set, is the stream a delete removed: Wait also checks
	// that nothing of it is left in nginx's configuration.
	deleted *stream.Spec
}

// Revision is the revision of the desired state the write committed (or
// found, when it changed nothing).
func (w *Pending) Revision() uint64 { return w.rev }

// Streams are the streams the write is about, as stored or, for a
// delete, as they were: those whose nodes are waited for.
func (w *Pending) Streams() []stream.Spec { return specsOf(w.items, w.deleted) }

// specsOf lists the specs of items and of deleted, if any.
func specsOf(items []item, deleted *stream.Spec) []stream.Spec {
	specs := make([]stream.Spec, 0, len(items)+1)
	for _, it := range items {
		specs = append(specs, it.stored)
	}
	if deleted != nil {
		specs = append(specs, *deleted)
	}
	return specs
}

// Wait blocks until the write is applied or ctx ends (ctx's error). It
// returns the streams nginx refused, undone by the time it returns.
func (w *Pending) Wait(ctx context.Context) ([]Refusal, error) {
	if w.done == nil {
		if err := w.p.ap.WaitApplied(ctx, w.rev, w.Streams()); err != nil {
			return nil, err
		}
		refused := w.p.refusals(w.items)
		if w.deleted != nil {
			if err := w.p.ap.Leftover(w.deleted.ID()); err != nil {
				refused = append(refused, Refusal{ID: w.deleted.ID(), Reason: err.Error()})
			}
		}
		return refused, nil
	}
	select {
	case <-w.done:
		return w.refused, w.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// observe returns a Pending for a write that stored nothing to undo (a
// delete, a write that changed nothing): Wait does the waiting.
func (p *Path) observe(rev uint64, items []item) *Pending {
	return &Pending{p: p, rev: rev, items: items}
}

// watch starts watching a write that committed revision rev, detached
// from the caller's context: once the revision is applied, each refused
// item the write stored is undone.
func (p *Path) watch(rev uint64, items []item, by string) *Pending {
	w := &Pending{p: p, rev: rev, items: items, done: make(chan struct{})}
	p.watches.Add(1)
	go func() {
		defer p.watches.Done()
		defer close(w.done)
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.UndoWindow)
		defer cancel()
		if err := p.ap.WaitApplied(ctx, rev, specsOf(items, nil)); err != nil {
			w.err = err
			if p.ctx.Err() != nil {
				p.log.Info().Uint64("revision", rev).Msg("stopped watching a write not yet applied: shutting down")
				return
			}
			p.log.Warn().Uint64("revision", rev).Dur("window", p.cfg.UndoWindow).Err(err).
				Msg("write not applied within the undo window; if nginx refuses it, it stays stored and failed")
			return
		}
		for _, it := range items {
			if r, ok := p.refusal(it); ok {
				r.Undone = p.undo(it, r.Reason, by)
				w.refused = append(w.refused, r)
			}
		}
	}()
	return w
}

// refusals lists the items nginx refused at their revision.
func (p *Path) refusals(items []item) []Refusal {
	var out []Refusal
	for _, it := range items {
		if r, ok := p.refusal(it); ok {
			out = append(out, r)
		}
	}
	return out
}

// refusal says whether nginx refused it at its revision, and why.
func (p *Path) refusal(it item) (Refusal, bool) {
	id := it.stored.ID()
	reason, refused := p.ap.Refused(id, it.stored.Revision)
	return Refusal{ID: id, Reason: reason}, refused
}

// undo takes back a write nginx refused, unless it stored nothing or the
// stream changed since (the precondition on its revision): the previous
// spec is restored, or the new stream removed.
func (p *Path) undo(it item, reason, by string) bool {
	if !it.undo {
		return false
	}
	id := it.stored.ID()
	m := desired.Match{Revision: it.stored.Revision}
	var err error
	if it.prev == nil {
		_, _, err = p.st.Delete(id, m)
	} else {
		_, _, err = p.st.Put(*it.prev, m)
	}
	log := p.log.With().Stringer("stream", id).Uint64("revision", it.stored.Revision).Str("by", by).Str("nginx", reason).Logger()
	if err != nil {
		log.Warn().Err(err).Msg("nginx refused a write that could not be undone (a revision mismatch: the stream changed since)")
		return false
	}
	log.Info().Bool("restored_previous", it.prev != nil).Msg("undid a write nginx refused")
	if p.cfg.OnUndo != nil {
		p.cfg.OnUndo(Undo{Stream: id.String(), Refused: it.stored, Restored: it.prev, Reason: reason, By: by})
	}
	return true
}
