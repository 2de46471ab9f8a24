package reconcile

import (
	"context"
	"math/rand/v2"
	"time"
)

// Trigger asks for a pass soon. It never blocks; triggers that arrive
// while one is pending are folded into it.
func (r *Reconciler) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Run does passes until ctx ends: one at once, then one for every burst of
// store changes or triggers, one every ResyncInterval, and retries with
// jittered exponential backoff after a failed pass. A failure is logged
// and shown in NodeStatus, never returned.
func (r *Reconciler) Run(ctx context.Context) {
	if !r.inPool {
		go r.watch(ctx)
	}
	if r.ownResolver != nil {
		go r.ownResolver.Run(ctx)
	}
	resync := time.NewTicker(r.cfg.ResyncInterval)
	defer resync.Stop()
	watch := time.NewTicker(r.cfg.WatchInterval)
	defer watch.Stop()
	retry := time.NewTimer(0) // the first pass
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.store.Changes():
		case <-r.trigger:
		case <-retry.C:
		case <-resync.C:
			clear(r.quarantine) // retry what failed, e.g. on a name that now resolves
			r.quarantineGen++
			r.markDirty("") // and read every file, in case an event was missed
		case <-watch.C:
			if !r.lookAgain() {
				continue
			}
		}
		// nginx takes a new configuration at most every ~100 ms (its
		// master sleeps that long after starting workers, and a reload
		// signalled meanwhile waits). Passing sooner gains nothing, so
		// wait out that spacing and let the writes arriving meanwhile join
		// this pass: fewer reloads, same latency.
		if wait := time.Until(r.lastReload.Add(ReloadSpacing)); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		release, ok := r.takeTurn(ctx)
		if !ok {
			return
		}
		r.passing.Store(true)
		err := r.runPass(ctx)
		r.passing.Store(false)
		release()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			retry.Reset(r.nextBackoff())
			continue
		}
		r.backoff = 0
		if r.waitingForRepair() {
			retry.Reset(r.cfg.RepairRate.every())
		}
	}
}

// turnWait bounds how long a shard of a Pool waits for a turn: a shard
// whose pass hangs (a master that does not answer) must not stop the
// others, which then pass anyway.
const turnWait = 50 * time.Millisecond

// takeTurn waits, in a Pool, until fewer than its turns' worth of shards
// pass at once (or turnWait passes). Many shards reloading at once on a
// few cores each get slower; a shard that waits for its turn has not
// listed its streams yet, so writes that arrive meanwhile join its pass
// (the pool places them there: waiting counts as due) instead of each
// costing a reload. It returns what ends the turn, and false when ctx
// ended.
func (r *Reconciler) takeTurn(ctx context.Context) (release func(), ok bool) {
	if r.turns == nil {
		return func() {}, true
	}
	select {
	case r.turns <- struct{}{}:
		return func() { <-r.turns }, true
	default:
	}
	r.waiting.Store(true)
	defer r.waiting.Store(false)
	t := time.NewTimer(turnWait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, false
	case r.turns <- struct{}{}:
		return func() { <-r.turns }, true
	case <-t.C:
		return func() {}, true
	}
}

func (r *Reconciler) nextBackoff() time.Duration {
	const lo, hi = 100 * time.Millisecond, 30 * time.Second
	r.backoff = min(hi, max(lo, 2*r.backoff))
	jitter := time.Duration(rand.Int64N(int64(r.backoff / 5)))
	return r.backoff - r.backoff/10 + jitter
}
