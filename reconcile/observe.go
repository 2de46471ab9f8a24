package reconcile

import (
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/stream"
)

// Observing the data plane: a record of what nginx was given ($DATA_DIR/
// applied, appliedFiles) says nothing of what it serves once someone
// reloads it with another main configuration. In managed mode:
//
//   - every pass, and every watch tick (WatchInterval), compares the main
//     configuration on disk with ours (one small file): a pass rewrites it
//     before it reloads, so an apply always loads our include;
//   - the first pass after a start, and the watch tick after nginx logged a
//     signal from someone else (a reload, a reopen, an exit) or a worker's
//     death, or once per ResyncInterval, look at what nginx listens on; our
//     own reloads are confirmed by Reload itself and cost no look. A look reads
//     the kernel's socket table, O(sockets on the host): ~3 µs per socket,
//     30-60 ms with 10,000 streams (BenchmarkListeningLook10000), which is
//     why it is not on every tick nor in the write's path.

// lookAgain is the watch tick: it reports whether a pass is needed because
// the managed nginx is not running, its main configuration is not ours, or
// it does not listen on the ports of streams it was given.
func (r *Reconciler) lookAgain() bool {
	if r.nginx.Supervises() && !r.nginx.Running() {
		r.log.Warn().Msg("nginx master is not running; starting it")
		return true
	}
	if !r.nginx.Confirms() || r.appliedFiles == nil {
		return false
	}
	if r.nginx.MainDrifted() {
		return true // the pass's Prepare rewrites it, logs and counts
	}
	if !r.nginx.Signalled() && time.Since(r.lastLook) < r.cfg.ResyncInterval {
		return false
	}
	r.lastLook = time.Now()
	served := make(map[string][]byte, len(r.appliedFiles))
	for name, b := range r.appliedFiles {
		if _, h := r.held[name]; !h {
			served[name] = b
		}
	}
	missing, err := r.notListening(served)
	if err != nil {
		return false // nothing to look at on this platform
	}
	return r.listenDrift(r.log, missing)
}

// notListening returns, sorted, the ids of the stream files in files whose
// port has no accepting socket: held by our nginx master when the driver
// can tell (managed mode), so that another process listening on the same
// port at another address (such as a second node on the same host) does
// not count; any accepting socket otherwise.
func (r *Reconciler) notListening(files map[string][]byte) ([]string, error) {
	want := fileOwners(r.cfg.Render.Prefix, files)
	if held := r.nginx.HeldPorts(); held != nil {
		return notHeld(want, held), nil
	}
	missing := map[string]bool{}
	for p, ports := range want {
		up, err := r.cfg.Ports.Listening(p)
		if err != nil {
			return nil, err
		}
		for port, id := range ports {
			if !up[port] {
				missing[id.String()] = true
			}
		}
	}
	return sortedKeys(missing), nil
}

// notHeld returns, sorted, the ids of the streams in want with a port
// not in held (a range's every port must be).
func notHeld(want portOwners, held map[stream.ID]bool) []string {
	missing := map[string]bool{}
	for p, ports := range want {
		for port, id := range ports {
			if !held[stream.ID{Protocol: p, Port: port}] {
				missing[id.String()] = true
			}
		}
	}
	return sortedKeys(missing)
}

// sortedKeys returns the keys of m, sorted (nil for none).
func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// listenDrift records what a look found and, when applied streams do not
// listen, logs it, counts it and asks the next pass to reload (within the
// repair rate). It reports whether a pass should run.
func (r *Reconciler) listenDrift(log zerolog.Logger, missing []string) bool {
	r.mu.Lock()
	known := slices.Equal(r.node.NotListening, missing)
	r.node.NotListening = missing
	r.mu.Unlock()
	if len(missing) == 0 {
		return false
	}
	if !r.repairs.allow() {
		if !known {
			log.Warn().Int("streams", len(missing)).Strs("first", missing[:min(10, len(missing))]).
				Msg("nginx does not listen on the ports of streams it applied; repair rate-limited")
			r.driftFound(driftListen, parseIDs(missing), "nginx does not listen on the ports of streams it applied; repair rate-limited", false)
		}
		return false
	}
	r.count(func(c *stream.NodeCounters) { c.ListenDrift++ })
	log.Warn().Int("streams", len(missing)).Strs("first", missing[:min(10, len(missing))]).
		Msg("nginx does not listen on the ports of streams it applied; reloading it")
	r.driftFound(driftListen, parseIDs(missing), "nginx does not listen on the ports of streams it applied; reloading it", true)
	r.forceReload = true
	return true
}

// lookFirst is the look of the first pass after a start: $DATA_DIR/applied
// may match while nginx serves something else (its main configuration was
// changed and reloaded while we were down). Files on disk that are desired
// as they are should be listening already; when some are not, the pass
// reloads.
func (r *Reconciler) lookFirst(log zerolog.Logger, running bool, desired map[string]file, onDisk map[string][]byte) {
	if !running || r.appliedFiles != nil || !r.nginx.Confirms() {
		return
	}
	served := make(map[string][]byte, len(desired))
	for name, f := range desired {
		if b, ok := onDisk[name]; ok && string(b) == string(f.body) {
			served[name] = b
		}
	}
	if missing, err := r.notListening(served); err == nil && r.listenDrift(log, missing) {
		r.takeForce()
	}
}

// takeForce makes the pass reload even if the fingerprint matches.
func (r *Reconciler) takeForce() {
	if r.nginx.TakeMainRepaired() {
		r.count(func(c *stream.NodeCounters) { c.MainConfigRepairs++ })
		r.forceReload = true
	}
	if r.forceReload {
		r.applied = "" // reloads, and stays so until a pass applies
		r.forceReload = false
	}
}
