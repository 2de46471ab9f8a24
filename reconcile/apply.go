package reconcile

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/stream"
)

// apply is what a pass hands nginx, and how far it got.
type apply struct {
	log     zerolog.Logger
	specs   []stream.Spec
	desired map[string]file    // the files nginx should run
	onDisk  map[string][]byte  // our files as the pass found them
	onNow   map[string][]byte  // our files as they are now
	owned   map[stream.ID]bool // streams whose port nginx held already
	running bool
	// Narrowing down a refusal that names no file (narrow.go).
	heldBack map[stream.ID]bool // suspects left out of the next try
	lastGood map[string][]byte  // the files a try of this pass applied
	narrowed []stream.ID        // streams quarantined by narrowing
}

// errKeepsRejecting ends a pass whose tries all found a stream to leave out.
var errKeepsRejecting = errors.New("nginx keeps rejecting the configuration")

// applyAll has nginx run a.desired. Each try that leaves a stream out
// (quarantine) renders and syncs the files again and tries once more; a
// failure that names no stream of ours ends the pass.
func (r *Reconciler) applyAll(ctx context.Context, a *apply) error {
	for attempt := 0; ; attempt++ {
		if attempt > 2*len(a.specs)+2 {
			return notApplied(errKeepsRejecting)
		}
		done, err := r.try(ctx, a)
		if err != nil || done {
			return err
		}
		desired := a.holdBack(r.withoutHeld(r.desiredFiles(a.specs)), r.baseline(a), r.cfg.Render.Prefix)
		if a.desired, err = r.syncDesired(a.log, a.specs, desired, a.onDisk, a.onNow); err != nil {
			return notApplied(err)
		}
	}
}

// try tests, starts or reloads, and verifies once. It reports done when
// nginx runs a.desired, and not done when streams were quarantined and
// the files must be rendered again.
func (r *Reconciler) try(ctx context.Context, a *apply) (done bool, err error) {
	// What nginx must pick up: files that differ from those it was given
	// last (all of them when it starts).
	fp := r.fingerprint(a.desired)
	changed := diffNames(a.onDisk, a.onNow)
	if a.running && fp == r.applied && len(changed) == 0 && !a.narrowing() {
		return true, nil
	}
	testTook, err := r.test(ctx)
	if err != nil {
		return false, r.rejected(a, err, nil)
	}
	op, applyStart := "reload", time.Now()
	if a.running {
		err = r.nginx.Reload(ctx, replacesOrRemoves(changed, a.onDisk))
	} else {
		op = "start"
		err = r.nginx.Start(ctx)
		changed = diffNames(nil, a.onNow)
	}
	took := time.Since(applyStart)
	r.counted(op, took, err)
	r.publishApply(startOrRestart(op, r.appliedFiles != nil), float64(took.Microseconds())/1000, err, len(a.desired))
	if err != nil {
		return false, r.rejected(a, err, a.owned)
	}
	a.running = true
	r.lastReload = time.Now()
	r.reloadedAt.Store(r.lastReload.UnixNano())
	a.log.Info().Str("op", op).Int("files_changed", len(changed)).Int("streams", len(a.desired)).
		Dur("test_ms", testTook).Dur("apply_ms", time.Since(applyStart)).Msg("nginx applied the configuration")
	n, err := r.verify(ctx, a.log, a.specs, a.desired, changed, a.onDisk, a.onNow)
	if err != nil {
		return false, notApplied(err)
	}
	if n > 0 {
		return false, nil // streams whose port never opened were left out
	}
	if len(a.heldBack) > 0 {
		// Narrowing: nginx took this half; the held back half goes next.
		a.lastGood, a.heldBack = bodies(a.desired), nil
		return false, nil
	}
	r.applied = fp
	if r.nginx.Confirms() {
		// nginx took every listen of the files it was given (a bind
		// failure fails the reload): what a look found missing is back.
		r.mu.Lock()
		r.node.NotListening = nil
		r.mu.Unlock()
	}
	if err := r.writeState(fp); err != nil {
		a.log.Warn().Err(err).Msg("record applied configuration")
	}
	return true, nil
}

// narrowing reports whether the pass is narrowing a refusal down: what
// nginx runs is then not known to be good, and every try is tried.
func (a *apply) narrowing() bool {
	return a.heldBack != nil || a.lastGood != nil || len(a.narrowed) > 0
}

// startOrRestart names a start of a master after one this process had
// already applied a configuration to (it died, or was stopped) a
// restart, for events.
func startOrRestart(op string, appliedBefore bool) string {
	if op == "start" && appliedBefore {
		return "restart"
	}
	return op
}

// test runs `nginx -t` first, unless nginx's own start or reload
// validates the configuration and reports the same diagnostics (managed
// mode, which reads them from the error log: a reload that fails keeps the
// old configuration, exactly as if -t had refused it).
func (r *Reconciler) test(ctx context.Context) (time.Duration, error) {
	if r.nginx.Confirms() {
		return 0, nil
	}
	start := time.Now()
	err := r.nginx.Test(ctx)
	took := time.Since(start)
	r.counted("test", took, err)
	return took, err
}

// counted counts an nginx test, start or reload and reports it (OnApply).
func (r *Reconciler) counted(op string, d time.Duration, err error) {
	r.observeApply(op, d, err)
	r.count(func(c *stream.NodeCounters) {
		switch op {
		case "test":
			c.Tests++
		case "start":
			c.Starts++
		default:
			c.Reloads++
		}
	})
}
