package reconcile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/internal/safefile"
	"github.com/streamconductor/stream-conductor/nginx"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// file is one desired stream file.
type file struct {
	spec stream.Spec
	body []byte
}

// pass brings nginx to the desired state once and returns the store
// revision it applied.
func (r *Reconciler) pass(ctx context.Context, log zerolog.Logger) (uint64, error) {
	specs, rev := r.store.List()
	r.dropStaleQuarantine(specs)
	if err := r.nginx.Prepare(ctx, len(specs)); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	r.takeForce() // the main configuration was repaired, or nginx did not listen
	running := !r.nginx.Supervises() || r.nginx.Running()
	if !running {
		if err := r.nginx.Recover(ctx); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
		}
	}

	// The directory may have been removed; nginx's include glob then
	// matches nothing, so recreating it is always safe.
	if err := os.MkdirAll(r.cfg.Dir, 0o755); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	onDisk, err := r.observe()
	if err != nil {
		r.markDirty("") // look at everything next time
		return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	r.pruneRenderCache(specs)
	// Ports our nginx already holds are not probed: they would be busy.
	// Those are the ones of the files it last loaded; before the first
	// apply of this process, the files on disk are the best guess.
	owned := map[string]bool{}
	if running {
		owned = idsOf(r.cfg.Render.Prefix, onDisk)
		for id := range idsOf(r.cfg.Render.Prefix, r.appliedFiles) {
			owned[id] = true
		}
		// And, on the first pass after a start, whatever nginx itself
		// holds, files or not (a file removed while we were down). Later
		// passes know what nginx loaded; reading the socket table costs
		// O(sockets on the host).
		if r.appliedFiles == nil {
			for id := range r.nginx.HeldPorts() {
				owned[id] = true
			}
		}
	}
	for _, s := range specs {
		if _, q := r.quarantine[s.ID()]; q || owned[s.ID()] {
			continue
		}
		if err := r.cfg.Ports.Busy(s, r.cfg.Render.DefaultBind); err != nil {
			r.quarantineStream(log, s, err.Error(), onDisk)
		}
	}

	// After a failure that was not ours (someone else's file breaks the
	// configuration), retries first test the last good files as they are:
	// while that still fails, nothing is written, so those files stay.
	if r.foreignBroken {
		r.count(func(c *stream.NodeCounters) { c.Tests++ })
		if err := r.nginx.Test(ctx); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
		}
		r.foreignBroken = false
	}
	desired := r.desiredFiles(specs)
	r.handleDrift(log, specs, desired, onDisk)
	desired = r.withoutHeld(desired)
	r.lookFirst(log, running, desired, onDisk)
	onNow := make(map[string][]byte, len(onDisk))
	for name, b := range onDisk {
		onNow[name] = b
	}
	defer r.remember(onNow)
	if desired, err = r.syncDesired(log, specs, desired, onDisk, onNow); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
	}

	for attempt := 0; ; attempt++ {
		if attempt > 2*len(specs)+2 {
			return 0, fmt.Errorf("%w: nginx keeps rejecting the configuration", ErrNotApplied)
		}
		// What nginx must pick up: files that differ from those it was
		// given last (all of them when it starts).
		fp := r.fingerprint(desired)
		changed := diffNames(onDisk, onNow)
		if running && fp == r.applied && len(changed) == 0 {
			break
		}
		// nginx -t first, unless nginx's own start or reload validates the
		// configuration and reports the same diagnostics (managed mode,
		// which reads them from the error log: a reload that fails keeps
		// the old configuration, exactly as if -t had refused it).
		var testTook time.Duration
		if !r.nginx.Confirms() {
			r.count(func(c *stream.NodeCounters) { c.Tests++ })
			testStart := time.Now()
			err := r.nginx.Test(ctx)
			testTook = time.Since(testStart)
			r.observeApply("test", testTook, err)
			if err != nil {
				if err := r.rejected(log, err, specs, onDisk, onNow, nil); err != nil {
					return 0, err
				}
				if desired, err = r.syncDesired(log, specs, r.withoutHeld(r.desiredFiles(specs)), onDisk, onNow); err != nil {
					return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
				}
				continue
			}
		}
		op := "reload"
		applyStart := time.Now()
		var err error
		if running {
			err = r.nginx.Reload(ctx, replacesOrRemoves(changed, onDisk))
		} else {
			op = "start"
			err = r.nginx.Start(ctx)
			changed = diffNames(nil, onNow)
		}
		r.observeApply(op, time.Since(applyStart), err)
		r.count(func(c *stream.NodeCounters) {
			if running {
				c.Reloads++
			} else {
				c.Starts++
			}
		})
		if err != nil {
			if err := r.rejected(log, err, specs, onDisk, onNow, owned); err != nil {
				return 0, err
			}
			if desired, err = r.syncDesired(log, specs, r.withoutHeld(r.desiredFiles(specs)), onDisk, onNow); err != nil {
				return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
			}
			continue
		}
		running = true
		r.lastReload = time.Now()
		log.Info().Str("op", op).Int("files_changed", len(changed)).Int("streams", len(desired)).
			Dur("test_ms", testTook).Dur("apply_ms", time.Since(applyStart)).Msg("nginx applied the configuration")
		n, err := r.verify(ctx, log, specs, desired, changed, onDisk, onNow)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
		}
		if n > 0 {
			if desired, err = r.syncDesired(log, specs, r.withoutHeld(r.desiredFiles(specs)), onDisk, onNow); err != nil {
				return 0, fmt.Errorf("%w: %w", ErrNotApplied, err)
			}
			continue
		}
		r.applied = fp
		if err := r.writeState(fp); err != nil {
			log.Warn().Err(err).Msg("record applied configuration")
		}
		break
	}
	applied := bodies(desired)
	for name := range r.held {
		if b, ok := r.appliedFiles[name]; ok {
			applied[name] = b
		}
	}
	r.appliedFiles = applied
	r.finish(specs, desired, rev)
	return rev, nil
}

func (r *Reconciler) observeApply(op string, d time.Duration, err error) {
	if r.cfg.OnApply != nil {
		r.cfg.OnApply(op, d, err)
	}
}

// rejected handles nginx refusing the configuration (a test, start or
// reload error): when the refusal names streams of ours, they are
// quarantined and it returns nil so that the pass tries again without them.
// Otherwise the failure is not ours to fix: the last good files go back,
// and the error is returned.
func (r *Reconciler) rejected(log zerolog.Logger, nerr error, specs []stream.Spec, onDisk, onNow map[string][]byte, owned map[string]bool) error {
	if err := r.checkIntact(onNow); err != nil {
		return err
	}
	if r.quarantineNamed(log, nerr, specs, onDisk, owned) > 0 {
		return nil
	}
	// Only a configuration nginx refused in words (a fatal diagnostic)
	// sends the files back to what nginx last loaded; a timeout, a
	// shutdown or a dead master leaves them for the next pass.
	var ne *nginx.Error
	if !errors.As(nerr, &ne) || !ne.Refused() {
		return fmt.Errorf("%w: %w", ErrNotApplied, nerr)
	}
	good := onDisk
	if r.appliedFiles != nil {
		good = make(map[string][]byte, len(r.appliedFiles))
		for name, b := range r.appliedFiles {
			if _, held := r.held[name]; !held {
				good[name] = b
			}
		}
	}
	if _, err := r.sync(log, good, onNow, nil); err != nil {
		log.Error().Err(err).Msg("restore last good files")
	}
	r.foreignBroken = true
	return fmt.Errorf("%w: %w", ErrNotApplied, nerr)
}

// errChangedDuringPass means someone changed our files while a pass was
// applying them: what nginx said is about their files, not about our
// streams, so nothing is blamed on a stream and the pass runs again.
var errChangedDuringPass = errors.New("config files changed during the pass")

// checkIntact returns errChangedDuringPass unless our files on disk are
// still exactly those the pass wrote (onNow).
func (r *Reconciler) checkIntact(onNow map[string][]byte) error {
	now, err := readOurs(r.cfg.Dir, r.cfg.Render.Prefix)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	r.hideHeld(now)
	if len(diffNames(now, onNow)) > 0 {
		return fmt.Errorf("%w: %w", ErrNotApplied, errChangedDuringPass)
	}
	return nil
}

// remember records what the pass left in the directory, held files
// included, for the next pass's drift check.
func (r *Reconciler) remember(onNow map[string][]byte) {
	r.lastWritten = make(map[string][]byte, len(onNow)+len(r.held))
	for name, b := range onNow {
		r.lastWritten[name] = b
	}
	for name, h := range r.held {
		if h.body != nil {
			r.lastWritten[name] = h.body
		}
	}
}

// replacesOrRemoves reports whether any changed file existed before: then
// nginx's old workers must stop accepting before the change is applied.
func replacesOrRemoves(changed []string, before map[string][]byte) bool {
	for _, name := range changed {
		if _, ok := before[name]; ok {
			return true
		}
	}
	return false
}

// diffNames returns the names whose contents differ between a and b,
// sorted.
func diffNames(a, b map[string][]byte) []string {
	var names []string
	for name, x := range a {
		if y, ok := b[name]; !ok || !bytes.Equal(x, y) {
			names = append(names, name)
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// bodies returns the contents of each desired file by name.
func bodies(desired map[string]file) map[string][]byte {
	b := make(map[string][]byte, len(desired))
	for name, f := range desired {
		b[name] = f.body
	}
	return b
}

// desiredFiles renders every spec that is not quarantined; a quarantined
// stream keeps its last good file, if it has one.
func (r *Reconciler) desiredFiles(specs []stream.Spec) map[string]file {
	files := make(map[string]file, len(specs))
	for _, s := range specs {
		if q, ok := r.quarantine[s.ID()]; ok {
			if q.keep != nil {
				files[nginxconf.FileName(r.cfg.Render.Prefix, s.Protocol, s.Listen)] = file{spec: s, body: q.keep}
			}
			continue
		}
		name, body := r.render(s)
		files[name] = file{spec: s, body: body}
	}
	return files
}

// withoutHeld drops held (drifted) files from desired: the pass keeps its
// hands off them.
func (r *Reconciler) withoutHeld(desired map[string]file) map[string]file {
	for name := range r.held {
		delete(desired, name)
	}
	return desired
}

// sync makes the directory hold exactly target among our files; onNow is
// what it holds now and is updated. It returns the names it changed. When
// failed is not nil, a file that cannot be replaced or removed while the
// directory takes other files (fileOnly) is left as it is and its error
// put in failed, instead of failing the whole sync.
func (r *Reconciler) sync(log zerolog.Logger, target, onNow map[string][]byte, failed map[string]error) ([]string, error) {
	var changed []string
	for name, body := range target {
		if cur, ok := onNow[name]; ok && bytes.Equal(cur, body) {
			continue
		}
		if err := safefile.Write(r.cfg.Dir, name, body); err != nil {
			if failed != nil && fileOnly(r.cfg.Dir, r.cfg.Render.Prefix, err) {
				failed[name] = fmt.Errorf("write %s: %w", name, err)
				continue
			}
			return changed, fmt.Errorf("write %s: %w", name, err)
		}
		onNow[name] = body
		delete(r.unremovable, name)
		changed = append(changed, name)
		r.count(func(c *stream.NodeCounters) { c.FilesWritten++ })
	}
	for name := range onNow {
		if _, ok := target[name]; ok {
			continue
		}
		if err := os.Remove(filepath.Join(r.cfg.Dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			if failed != nil && fileOnly(r.cfg.Dir, r.cfg.Render.Prefix, err) {
				failed[name] = fmt.Errorf("remove %s: %w", name, err)
				continue
			}
			return changed, fmt.Errorf("remove %s: %w", name, err)
		}
		delete(onNow, name)
		delete(r.unremovable, name)
		changed = append(changed, name)
		r.count(func(c *stream.NodeCounters) { c.FilesRemoved++ })
	}
	if len(changed) == 0 {
		return nil, nil
	}
	slices.Sort(changed)
	log.Info().Strs("files", changed).Msg("config files changed")
	return changed, safefile.SyncDir(r.cfg.Dir)
}

// quarantineNamed quarantines the streams an nginx failure names: the
// files `nginx -t` points at, or the streams whose port a start or reload
// could not bind (skipping the ports in owned, which nginx holds already).
// It returns how many it quarantined; 0 means the failure is not ours.
func (r *Reconciler) quarantineNamed(log zerolog.Logger, err error, specs []stream.Spec, onDisk map[string][]byte, owned map[string]bool) int {
	var ne *nginx.Error
	if !errors.As(err, &ne) {
		return 0
	}
	byID := make(map[string]stream.Spec, len(specs))
	for _, s := range specs {
		byID[s.ID()] = s
	}
	n := 0
	for _, d := range ne.Diags {
		if !d.IsFatal() {
			continue
		}
		if d.File != "" && filepath.Dir(d.File) == filepath.Clean(absDir(r.cfg.Dir)) {
			id, ok := nginxconf.ParseFileName(r.cfg.Render.Prefix, filepath.Base(d.File))
			if s, known := byID[id]; ok && known {
				r.quarantineStream(log, s, d.Message, onDisk)
				n++
			}
			continue
		}
		addr, ok := d.BindFailure()
		if !ok {
			continue
		}
		for _, s := range specs {
			if _, q := r.quarantine[s.ID()]; q || owned[s.ID()] || !hasPort(addr, s.Listen) {
				continue
			}
			r.quarantineStream(log, s, d.Message, onDisk)
			n++
		}
	}
	return n
}

// quarantineStream leaves s out of the configuration at its revision. If
// its file on disk before this pass differs from what s renders to, that
// last good file stays (an update nginx rejects does not take the old
// version down); otherwise the file goes.
func (r *Reconciler) quarantineStream(log zerolog.Logger, s stream.Spec, reason string, onDisk map[string][]byte) {
	q := quarantined{revision: s.Revision, reason: reason}
	name, body := r.render(s)
	prev, again := r.quarantine[s.ID()]
	// When the kept file is the one rejected now, nothing is kept.
	if old, ok := onDisk[name]; ok && !bytes.Equal(old, body) && !(again && prev.keep != nil) {
		q.keep = old
	}
	r.quarantine[s.ID()] = q
	r.quarantineGen++
	r.count(func(c *stream.NodeCounters) { c.Quarantined++ })
	log.Warn().Str("stream", s.ID()).Uint64("revision", s.Revision).Str("reason", reason).
		Bool("kept_previous", q.keep != nil).Msg("stream failed; left out of the configuration")
}

// dropStaleQuarantine forgets quarantines of specs that changed or went.
func (r *Reconciler) dropStaleQuarantine(specs []stream.Spec) {
	if len(r.quarantine) == 0 {
		return
	}
	revs := make(map[string]uint64, len(specs))
	for _, s := range specs {
		revs[s.ID()] = s.Revision
	}
	for id, q := range r.quarantine {
		if revs[id] != q.revision {
			delete(r.quarantine, id)
			r.quarantineGen++
		}
	}
}

// verify checks the kernel's socket table until every changed file's port
// is listening if the file is desired and closed if it went, when nginx's
// answer does not confirm that by itself (external mode, where reload is
// only a signal). Reading the socket table costs O(sockets on the host),
// so managed mode, whose answers confirm, skips it.
// Streams whose port never opened are quarantined; it returns how many.
// If nginx dies meanwhile it returns an error instead: the ports are shut
// because nginx is gone, not because of the streams.
func (r *Reconciler) verify(ctx context.Context, log zerolog.Logger, specs []stream.Spec, desired map[string]file, changed []string, onDisk, onNow map[string][]byte) (int, error) {
	if len(changed) == 0 || r.nginx.Confirms() {
		return 0, nil
	}
	want := map[stream.Protocol]map[int]bool{stream.TCP: {}, stream.UDP: {}}
	for _, name := range changed {
		id, _ := nginxconf.ParseFileName(r.cfg.Render.Prefix, name)
		p, port, err := stream.ParseID(id)
		if err != nil {
			continue
		}
		_, open := desired[name]
		want[p][port] = open
	}
	deadline := time.Now().Add(r.cfg.VerifyTimeout)
	for {
		var notOpen, notClosed []string
		for p, ports := range want {
			if len(ports) == 0 {
				continue
			}
			up, err := r.cfg.Ports.Listening(p)
			if err != nil {
				return 0, nil // nothing to verify against on this platform
			}
			for port, open := range ports {
				switch {
				case open && !up[port]:
					notOpen = append(notOpen, stream.MakeID(p, port))
				case !open && up[port]:
					notClosed = append(notClosed, stream.MakeID(p, port))
				}
			}
		}
		if len(notOpen)+len(notClosed) == 0 {
			return 0, nil
		}
		if r.nginx.Supervises() && !r.nginx.Running() {
			return 0, errors.New("nginx exited while its ports were being verified")
		}
		if time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err := r.checkIntact(onNow); err != nil {
			return 0, err // nginx loaded someone else's files, not ours
		}
		if len(notClosed) > 0 {
			log.Warn().Strs("streams", notClosed).Msg("ports of removed streams are still open after the reload")
		}
		n := 0
		for _, s := range specs {
			if slices.Contains(notOpen, s.ID()) {
				r.quarantineStream(log, s, "nginx reported success but did not open the port within "+r.cfg.VerifyTimeout.String(), onDisk)
				n++
			}
		}
		return n, nil
	}
}

// finish records the outcome of a successful pass: every spec is active,
// or failed if quarantined.
func (r *Reconciler) finish(specs []stream.Spec, desired map[string]file, rev uint64) {
	// Nothing to record when neither the store nor a quarantine changed.
	key := [2]uint64{rev, r.quarantineGen}
	if key == r.finished {
		return
	}
	r.finished = key
	now := time.Now().UTC()
	r.mu.Lock()
	defer r.mu.Unlock()
	status := make(map[string]stream.Status, len(specs))
	for _, s := range specs {
		st := stream.Status{State: stream.Active, Revision: s.Revision, Since: now}
		if q, ok := r.quarantine[s.ID()]; ok {
			st.State, st.Error = stream.Failed, q.reason
		}
		if old, ok := r.status[s.ID()]; ok && old.State == st.State && old.Error == st.Error {
			st.Since = old.Since
		}
		status[s.ID()] = st
	}
	r.status = status
	r.statusVersion++
	owned := make(map[string]bool, len(desired))
	for _, f := range desired {
		owned[f.spec.ID()] = true
	}
	r.ownedIDs = owned
}

// fingerprint identifies a whole configuration: the main file and every
// stream file. Held (drifted) files count as nginx last loaded them, so
// that drift alone never asks for a reload. Files are hashed once per
// content (fileHash), so an unchanged configuration costs a sort and a
// short hash, not a hash of every byte.
func (r *Reconciler) fingerprint(desired map[string]file) string {
	files := bodies(desired)
	for name := range r.held {
		if b, ok := r.appliedFiles[name]; ok {
			files[name] = b
		}
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	h := sha256.New()
	h.Write(r.nginx.MainConfig())
	for _, name := range names {
		h.Write([]byte{0})
		h.Write([]byte(name))
		sum := r.fileHash(files[name])
		h.Write(sum[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fileHash returns the SHA-256 of a file's content, remembered by the
// address of the bytes the render cache holds.
func (r *Reconciler) fileHash(b []byte) [32]byte {
	if len(b) == 0 {
		return sha256.Sum256(nil)
	}
	key := &b[0]
	if h, ok := r.hashes[key]; ok && h.n == len(b) {
		return h.sum
	}
	sum := sha256.Sum256(b)
	if len(r.hashes) > 4*len(r.renderCache)+64 {
		clear(r.hashes) // bytes of old renders: start again
	}
	r.hashes[key] = hashed{n: len(b), sum: sum}
	return sum
}

func sortStrings(s []string) []string {
	slices.Sort(s)
	return s
}

func (r *Reconciler) count(f func(*stream.NodeCounters)) {
	r.mu.Lock()
	f(&r.node.Counters)
	r.mu.Unlock()
}

func absDir(d string) string {
	a, err := filepath.Abs(d)
	if err != nil {
		return d
	}
	return a
}

// hasPort reports whether an nginx socket address ends in port.
func hasPort(addr string, port int) bool {
	return strings.HasSuffix(addr, ":"+strconv.Itoa(port))
}
