package reconcile

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/stream"
)

// file is one desired stream file.
type file struct {
	spec stream.Spec
	body []byte
}

// notApplied wraps a pass's failure: the pass is retried.
func notApplied(err error) error {
	return fmt.Errorf("%w: %w", ErrNotApplied, err)
}

// pass brings nginx to the desired state once and returns the store
// revision it applied.
func (r *Reconciler) pass(ctx context.Context, log zerolog.Logger) (uint64, error) {
	specs, rev := r.store.List()
	specs = r.ours(specs)
	r.dropStaleQuarantine(specs)
	r.retainNames(specs, rev)
	running, err := r.prepare(ctx, listeningPorts(specs)) // worker_connections: a slot per port
	if err != nil {
		return 0, notApplied(err)
	}
	onDisk, err := r.observe()
	if err != nil {
		r.markDirty("") // look at everything next time
		return 0, notApplied(err)
	}
	r.pruneRenderCache(specs)
	owned := r.ownedPorts(running, onDisk)
	r.capStreams(log, specs, owned, onDisk)
	r.probePorts(log, specs, owned, onDisk)
	if err := r.retestForeign(ctx); err != nil {
		return 0, notApplied(err)
	}
	if r.appliedFiles == nil {
		// Before the first apply of this process, the files on disk are
		// the best guess at what nginx runs: a stream that cannot be
		// rendered now (DNS down at start) keeps its file.
		r.bootFiles = onDisk
	}
	desired := r.desiredFiles(specs)
	r.handleDrift(log, specs, desired, onDisk)
	desired = r.withoutHeld(desired)
	r.lookFirst(log, running, desired, onDisk)
	a := &apply{log: log, specs: specs, onDisk: onDisk, onNow: maps.Clone(onDisk), owned: owned, running: running}
	defer r.remember(a.onNow)
	if a.desired, err = r.syncDesired(log, specs, desired, onDisk, a.onNow); err != nil {
		return 0, notApplied(err)
	}
	if err := r.applyAll(ctx, a); err != nil {
		return 0, err
	}
	applied := bodies(a.desired)
	for name := range r.held {
		if b, ok := r.appliedFiles[name]; ok {
			applied[name] = b
		}
	}
	r.appliedFiles = applied
	r.bootFiles = nil
	r.bansApplied(a.desired)
	r.finish(specs, a.desired, rev)
	r.driftRepaired()
	return rev, nil
}

// ours keeps of specs the streams that target this node: the others are
// neither rendered nor counted here. specs may be the store's own list:
// it is not changed.
func (r *Reconciler) ours(specs []stream.Spec) []stream.Spec {
	targets := func(s stream.Spec) bool { return s.Targets(r.cfg.Node) }
	if !slices.ContainsFunc(specs, func(s stream.Spec) bool { return !targets(s) }) {
		return specs
	}
	mine := make([]stream.Spec, 0, len(specs))
	for _, s := range specs {
		if targets(s) {
			mine = append(mine, s)
		}
	}
	return mine
}

// prepare readies nginx and the directory for a pass over streams
// streams, and reports whether nginx runs; a supervised nginx that does
// not is first recovered from.
func (r *Reconciler) prepare(ctx context.Context, streams int) (running bool, err error) {
	if err := r.nginx.Prepare(ctx, streams); err != nil {
		return false, err
	}
	if !r.nginx.Supervises() && !r.nginx.Running() {
		// Only a reload tells whether an nginx we do not supervise is
		// back: the last one found no master.
		r.forceReload = true
	}
	r.takeForce() // the main configuration was repaired, or nginx did not listen
	running = !r.nginx.Supervises() || r.nginx.Running()
	if !running {
		if r.appliedFiles != nil { // it ran what we gave it: it died, or was stopped
			r.driftFound(driftMaster, nil, "nginx's master is not running; restarting it", true)
		}
		if err := r.nginx.Recover(ctx); err != nil {
			return false, err
		}
	}
	// The directory may have been removed; nginx's include glob then
	// matches nothing, so recreating it is always safe.
	return running, os.MkdirAll(r.cfg.Dir, 0o755)
}

// ownedPorts returns the ids of the streams whose port our nginx already
// holds, which are not probed: they would be busy. Those are the ones of
// the files it last loaded (and of our files on disk). On the first pass
// after a start, when the driver can tell, they are exactly the ports the
// master holds, files or not: a file of ours edited to listen elsewhere
// while we were down says nothing of its port, which another process may
// hold now, and a file removed meanwhile leaves its port held. Later
// passes know what nginx loaded; reading the socket table costs
// O(sockets on the host).
func (r *Reconciler) ownedPorts(running bool, onDisk map[string][]byte) map[stream.ID]bool {
	if !running {
		return map[stream.ID]bool{}
	}
	if r.appliedFiles == nil {
		if held := r.nginx.HeldPorts(); held != nil {
			return held
		}
	}
	owned := idsOf(r.cfg.Render.Prefix, onDisk)
	for id := range idsOf(r.cfg.Render.Prefix, r.appliedFiles) {
		owned[id] = true
	}
	return owned
}

// probePorts quarantines the streams whose address another process
// holds, but for those in owned, of which only a range's added ports are
// probed (portsAdded): a held one would fail the whole reload, blocking
// nginx's master for seconds.
func (r *Reconciler) probePorts(log zerolog.Logger, specs []stream.Spec, owned map[stream.ID]bool, onDisk map[string][]byte) {
	for _, s := range specs {
		if _, q := r.quarantine[s.ID()]; q {
			continue
		}
		probe := s
		if owned[s.ID()] {
			var grew bool
			if probe, grew = r.portsAdded(s, onDisk); !grew {
				continue
			}
		}
		if err := r.cfg.Ports.BindConflict(probe, r.cfg.Render.DefaultBind); err != nil {
			r.quarantineStream(log, s, err.Error(), onDisk)
		}
	}
}

// retestForeign: after a failure that was not ours (someone else's file
// breaks the configuration), retries first test the last good files as
// they are: while that still fails, nothing is written, so those files
// stay.
func (r *Reconciler) retestForeign(ctx context.Context) error {
	if !r.foreignBroken {
		return nil
	}
	r.count(func(c *stream.NodeCounters) { c.Tests++ })
	if err := r.nginx.Test(ctx); err != nil {
		return err
	}
	r.foreignBroken = false
	return nil
}

func (r *Reconciler) observeApply(op string, d time.Duration, err error) {
	if r.cfg.OnApply != nil {
		r.cfg.OnApply(op, d, err)
	}
}
