package reconcile

import (
	"bytes"
	"errors"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginx"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// quarantined is a stream that nginx rejected at one revision. It stays
// out of the configuration until its spec changes or the next resync;
// keep, when set, is its last good file, left in place meanwhile.
type quarantined struct {
	revision uint64
	reason   string
	keep     []byte
}

// rejected handles nginx refusing the configuration (a test, start or
// reload error): when the refusal names streams of ours, they are
// quarantined and it returns nil so that the pass tries again without them;
// a refusal that names no file is narrowed down to a stream (narrow).
// Otherwise the failure is not ours to fix: the last good files go back,
// and the error is returned.
func (r *Reconciler) rejected(a *apply, nerr error, owned map[stream.ID]bool) error {
	log, onDisk, onNow := a.log, a.onDisk, a.onNow
	if err := r.checkIntact(onNow); err != nil {
		return err
	}
	if r.quarantineNamed(log, nerr, a.specs, onDisk, owned) > 0 || r.narrow(a, nerr) {
		return nil
	}
	// Only a configuration nginx refused in words (a fatal diagnostic)
	// sends the files back to what nginx last loaded; a timeout, a
	// shutdown or a dead master leaves them for the next pass.
	var ne *nginx.Error
	if !errors.As(nerr, &ne) || !ne.Refused() {
		return notApplied(nerr)
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
	return notApplied(nerr)
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
		return notApplied(err)
	}
	r.hideHeld(now)
	if len(diffNames(now, onNow)) > 0 {
		return notApplied(errChangedDuringPass)
	}
	return nil
}

// quarantineNamed quarantines the streams an nginx failure names: the
// files `nginx -t` points at, or the streams whose port a start or reload
// could not bind (skipping the ports in owned, which nginx holds already).
// It returns how many it quarantined; 0 means the failure is not ours.
func (r *Reconciler) quarantineNamed(log zerolog.Logger, err error, specs []stream.Spec, onDisk map[string][]byte, owned map[stream.ID]bool) int {
	var ne *nginx.Error
	if !errors.As(err, &ne) {
		return 0
	}
	byID := make(map[stream.ID]stream.Spec, len(specs))
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
			if _, q := r.quarantine[s.ID()]; q || owned[s.ID()] || !r.listensOn(s, addr) {
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
	c := r.render(s)
	name, body := c.name, c.body
	prev, again := r.quarantine[s.ID()]
	// When the kept file is the one rejected now, nothing is kept.
	if old, ok := onDisk[name]; ok && !bytes.Equal(old, body) && !(again && prev.keep != nil) {
		q.keep = old
	}
	r.quarantine[s.ID()] = q
	r.quarantineGen++
	r.count(func(c *stream.NodeCounters) { c.Quarantined++ })
	log.Warn().Stringer("stream", s.ID()).Uint64("revision", s.Revision).Str("reason", reason).
		Bool("kept_previous", q.keep != nil).Msg("stream failed; left out of the configuration")
}

// dropStaleQuarantine forgets quarantines of specs that changed or went.
func (r *Reconciler) dropStaleQuarantine(specs []stream.Spec) {
	if len(r.quarantine) == 0 {
		return
	}
	revs := make(map[stream.ID]uint64, len(specs))
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

// failFiles quarantines the streams whose file could not be written, and
// notes (logged once) the files of no stream that could not be removed. It
// returns how many streams it quarantined.
func (r *Reconciler) failFiles(log zerolog.Logger, specs []stream.Spec, failed map[string]error, onDisk map[string][]byte) int {
	n := 0
	for name, err := range failed {
		s, ok := r.specOf(specs, name)
		if !ok {
			if !r.unremovable[name] {
				r.unremovable[name] = true
				log.Error().Err(err).Str("file", name).Msg("cannot remove the file of a deleted stream; nginx keeps serving it")
			}
			continue
		}
		if _, q := r.quarantine[s.ID()]; q {
			continue
		}
		r.quarantineStream(log, s, err.Error(), onDisk)
		n++
	}
	return n
}

// specOf returns the spec whose file is name.
func (r *Reconciler) specOf(specs []stream.Spec, name string) (stream.Spec, bool) {
	id, ok := nginxconf.ParseFileName(r.cfg.Render.Prefix, name)
	if !ok {
		return stream.Spec{}, false
	}
	for _, s := range specs {
		if s.ID() == id {
			return s, true
		}
	}
	return stream.Spec{}, false
}

// listensOn reports whether addr, a socket address as nginx printed it
// in a bind() failure ("127.0.0.1:9000", "[::1]:9000"), is an address
// s listens on (any port of a range): the whole address, so that a
// stream on 127.0.0.2:9000 is not blamed for 127.0.0.1:9000.
func (r *Reconciler) listensOn(s stream.Spec, addr string) bool {
	ap, err := stream.ParseListenAddr(addr)
	own := s.ListenAddr(r.cfg.Render.DefaultBind)
	return err == nil && ap.Addr() == own.Addr() && s.Covers(int(ap.Port()))
}
