package reconcile

import (
	"context"
	"runtime/debug"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// Placement. A master takes one configuration per reload and then sleeps
// ~100 ms (ReloadSpacing) before it takes the next, so a new stream goes
// to a shard that is neither passing nor cooling down: the streams new in
// one listing fill one such shard up to the target size (in ports: a
// range weighs its ports, pool_weight.go), the emptiest first, or a shard
// whose pass is due and has not started, which takes it at no cost; a
// shard is started only when every running one is busy, and when all are
// started and busy, the one whose cool-down ends first takes it.
// A hash of the port would send a sequential loop's next stream to the
// shard that just reloaded for the last one, and wait for its cool-down
// (docs/nginx-pool-design.md, §3.1). A stream stays where it is placed
// until it is deleted and its shard has applied the deletion, so a quick
// delete and create again stays on the same shard.

// minTarget is the fewest ports a shard is filled with before the next
// idle one is preferred to it: a quiet node keeps few masters.
const minTarget = 64

// distribute lists the store, places the streams that are new and hands
// each shard its list, signalling those whose list changed.
func (p *Pool) distribute(ctx context.Context) {
	specs, rev := p.store.List()
	tl := timelineOf(p.store)
	if p.cfg.OnList != nil && (rev != p.listedRev || tl != p.listedTL || !p.listed) {
		p.cfg.OnList(specs)
	}
	p.diff.next(p.cfg.Events, specs, rev, tl)
	specs = p.preview.ours(specs)
	p.retain(specs, rev)
	p.mu.Lock()
	defer p.mu.Unlock()
	newTimeline := tl != p.listedTL
	lists := make([][]stream.Spec, len(p.shards))
	present := make(map[stream.ID]bool, len(specs))
	chosen := -1
	for _, sp := range specs {
		// Placed streams first get their weight, so that the new ones are
		// placed against every shard's ports as listed now.
		p.reweigh(sp.ID(), sp.PortCount())
	}
	for _, sp := range specs {
		id := sp.ID()
		present[id] = true
		p.unmarkGone(id)
		if mv, ok := p.withheld[id]; ok {
			if !p.released(&mv, rev) {
				p.withheld[id] = mv
				continue
			}
			delete(p.withheld, id)
		}
		k, ok := p.place[id]
		if !ok {
			if k = p.choose(ctx, &chosen, sp.PortCount()); k < 0 {
				continue // no shard could start: pending, tried again at the next listing
			}
			p.placeOn(id, k, sp.PortCount())
			p.version++
		}
		lists[k] = append(lists[k], sp)
	}
	for id := range p.place {
		if !present[id] {
			p.markGone(id, rev)
		}
	}
	for id := range p.withheld {
		if !present[id] {
			delete(p.withheld, id)
		}
	}
	p.listedRev, p.listedTL, p.listed = rev, tl, true
	for k, s := range p.shards {
		if s == nil {
			continue
		}
		// A shard's first list is a change even when empty: an adopted
		// shard has yet to apply it (remove what moves away).
		if newTimeline || !s.listed || !sameSpecs(s.view.specs, lists[k]) {
			s.view.specs = lists[k]
			s.changedAt = rev
			s.listed = true
			s.view.signal()
		}
		s.view.rev = rev
		s.view.tl.Store(tl)
	}
	p.collect()
	p.notify()
}

// sameSpecs reports whether a and b list the same specs at the same
// revisions, in the same order.
func sameSpecs(a, b []stream.Spec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID() != b[i].ID() || a[i].Revision != b[i].Revision {
			return false
		}
	}
	return true
}

// released reports whether a moving stream's old shard has let go of it:
// it applied a list without the stream (from revision mv.until, set at
// the first listing that withheld it), or it is stopped.
func (p *Pool) released(mv *move, rev uint64) bool {
	if mv.until == 0 {
		mv.until = rev
	}
	s := p.shards[mv.from]
	if s == nil {
		return true
	}
	if !s.draining && s.view.rev < mv.until {
		return false // the duplicate's shard: lists it only from until
	}
	return p.shardApplied(s, mv.until) && p.listedRev >= mv.until
}

// choose returns the shard for a new stream of w ports, starting one if
// it must; -1 when none can take it. chosen is the shard this listing
// fills. Sizes are in ports (pool_weight.go).
func (p *Pool) choose(ctx context.Context, chosen *int, w int) int {
	target := p.target()
	usable := func(k int) bool {
		s := p.shards[k]
		return s != nil && !s.retiring && !s.draining && p.hasRoom(k, w)
	}
	if k := *chosen; k >= 0 && usable(k) && p.counts[k] < target {
		return k
	}
	// A shard whose pass is due and has not listed yet takes the stream
	// into that pass, at no cost; otherwise an idle one, the emptiest.
	best := -1
	for k := range p.cfg.Shards {
		if usable(k) && p.counts[k] < target && p.shards[k].due() {
			best = k
			break
		}
	}
	for k := range p.cfg.Shards {
		if best >= 0 {
			break
		}
		if !usable(k) || p.counts[k] >= target || p.shards[k].busy() {
			continue
		}
		if best < 0 || p.counts[k] < p.counts[best] {
			best = k
		}
	}
	if best < 0 {
		for k := range p.cfg.Shards {
			if p.shards[k] != nil {
				continue
			}
			if err := p.startShard(ctx, k); err != nil {
				p.log.Error().Err(err).Int("shard", k).Msg("start a shard")
				continue
			}
			p.log.Info().Int("shard", k).Msg("every running nginx shard is busy; started another")
			best = k
			break
		}
	}
	if best < 0 {
		var soonest time.Time
		for k := range p.cfg.Shards {
			if !usable(k) {
				continue
			}
			if at := p.shards[k].readyAt(); best < 0 || at.Before(soonest) || (at.Equal(soonest) && p.counts[k] < p.counts[best]) {
				best, soonest = k, at
			}
		}
	}
	if best < 0 {
		best = p.emptiest()
	}
	*chosen = best
	return best
}

// emptiest returns the running shard below Shards with the fewest ports,
// or -1: for a stream that fits no shard's open-file limit, which that
// shard then fails with the limit's words (capStreams) rather than
// leaving it pending.
func (p *Pool) emptiest() int {
	best := -1
	for k := range p.cfg.Shards {
		s := p.shards[k]
		if s == nil || s.retiring || s.draining {
			continue
		}
		if best < 0 || p.counts[k] < p.counts[best] {
			best = k
		}
	}
	return best
}

// busy reports whether the shard is passing, has a pass coming, or its
// master is still cooling down after its last reload.
func (s *shard) busy() bool {
	return s.rec.passing.Load() || s.rec.waiting.Load() || len(s.view.changes) > 0 || len(s.rec.trigger) > 0 || time.Now().Before(s.readyAt())
}

// due reports whether the shard has a pass coming that has not started
// (it waits for its turn, or has a change and will not wait for a
// cool-down): a stream placed on it now is in
// that pass (a pass lists the pool's view when it starts, under the
// pool's lock), so it costs no reload of its own.
func (s *shard) due() bool {
	if s.rec.passing.Load() {
		return false
	}
	return s.rec.waiting.Load() || (len(s.view.changes) > 0 || len(s.rec.trigger) > 0) && !time.Now().Before(s.readyAt())
}

// readyAt is when the shard's master takes a configuration again.
func (s *shard) readyAt() time.Time {
	return time.Unix(0, s.rec.reloadedAt.Load()).Add(ReloadSpacing)
}

// shardApplied reports whether shard s has applied every change up to
// rev: it applied rev itself, or its list did not change since a revision
// it applied. Called with p.mu held.
func (p *Pool) shardApplied(s *shard, rev uint64) bool {
	ar, tl := s.rec.appliedAt()
	if tl != p.listedTL {
		return false
	}
	return ar >= rev || (rev <= p.listedRev && ar >= s.changedAt)
}

// collect forgets the placement of deleted streams whose shard has applied
// the deletion. Called with p.mu held.
func (p *Pool) collect() {
	for id, rev := range p.gone {
		k := p.place[id]
		if s := p.shards[k]; s != nil && !p.shardApplied(s, rev) {
			continue
		}
		p.unplace(id)
		p.version++
	}
}

// passed is every shard's OnPass. It is called under the shard's lock,
// so it only wakes the pool (which forgets what the pass deleted, and
// hands over streams the pass let go of) and the waiters.
func (p *Pool) passed(*shard) {
	select {
	case p.passedCh <- struct{}{}:
	default:
	}
	p.notify()
}

// afterPass is the pool's side of passed.
func (p *Pool) afterPass(ctx context.Context) {
	p.mu.Lock()
	p.collect()
	relist := len(p.withheld) > 0
	p.mu.Unlock()
	if relist {
		p.distribute(ctx)
	}
	p.freeIfQuiet()
}

// freeIfQuiet gives memory back once the shards are done with a big
// write (an import, a start: Reconciler.freeAfterBigWrites). It is asked
// after every pass and every tick: the pass that ends the burst may still
// be running when the pool hears of it.
func (p *Pool) freeIfQuiet() {
	if p.written.Load() <= 1000 {
		return
	}
	p.mu.Lock()
	for _, s := range p.shards {
		if s != nil && (s.rec.passing.Load() || s.rec.waiting.Load() || len(s.view.changes) > 0) {
			p.mu.Unlock()
			return
		}
	}
	p.mu.Unlock()
	p.written.Store(0)
	debug.FreeOSMemory()
}

// notify wakes WaitApplied.
func (p *Pool) notify() {
	p.progMu.Lock()
	close(p.progress)
	p.progress = make(chan struct{})
	p.progMu.Unlock()
}

// retain tells the resolver which names every stream uses, when the store
// changed since it was last told.
func (p *Pool) retain(specs []stream.Spec, rev uint64) {
	if rev == p.retainedRev {
		return
	}
	p.retainedRev = rev
	p.resolver.Retain(namesInUse(specs))
}
