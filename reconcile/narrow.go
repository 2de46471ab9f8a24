package reconcile

import (
	"bytes"
	"errors"
	"slices"
	"strings"

	"github.com/streamconductor/stream-conductor/nginx"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// Narrowing. Some of nginx's refusals name no file, e.g. "could not build
// map_hash, you should increase map_hash_bucket_size": nginx reports them
// once the whole configuration is read. Restoring the last good files and
// failing the pass would leave the node held up until the stream at fault
// is removed, since every later pass renders it again. Instead the pass
// narrows it down: the streams whose files changed since nginx last took a
// configuration are the suspects; half of them are held back (their last
// good file, or none) and nginx tries again. A success clears the half it
// ran, a failure the half held back, until one stream is left, which is
// quarantined with nginx's words. That costs about log2(suspects) more
// reloads, in the one pass where nginx refused.

// unnamedRefusal returns the first fatal diagnostic of an nginx refusal
// that names no file and no address it could not bind: one no stream of
// ours is pointed at.
func unnamedRefusal(err error) (nginxconf.Diagnostic, bool) {
	var ne *nginx.Error
	if !errors.As(err, &ne) {
		return nginxconf.Diagnostic{}, false
	}
	for _, d := range ne.Diags {
		if !d.IsFatal() {
			continue
		}
		if _, bind := d.BindFailure(); d.File == "" && !bind {
			return d, true
		}
		return nginxconf.Diagnostic{}, false
	}
	return nginxconf.Diagnostic{}, false
}

// narrow handles a refusal that names no file (see above). It reports
// whether the pass should try again: it held back half of the suspects, or
// quarantined the last one. When no suspect is left, the refusal is not
// the fault of a stream changed in this pass: a stream it quarantined
// while narrowing is let go again, and it reports false.
func (r *Reconciler) narrow(a *apply, nerr error) bool {
	d, ok := unnamedRefusal(nerr)
	if !ok {
		return false
	}
	suspects := a.suspects(r.baseline(a))
	switch len(suspects) {
	case 0:
		for _, id := range a.narrowed {
			delete(r.quarantine, id)
			r.quarantineGen++
		}
		a.narrowed = nil
		return false
	case 1:
		var s stream.Spec
		for _, f := range a.desired {
			if f.spec.ID() == suspects[0] {
				s = f.spec
			}
		}
		r.quarantineStream(a.log, s, d.Message, a.onDisk)
		a.narrowed = append(a.narrowed, suspects[0])
		return true
	}
	if a.heldBack == nil {
		a.heldBack = map[stream.ID]bool{}
	}
	held := suspects[len(suspects)/2:]
	for _, id := range held {
		a.heldBack[id] = true
	}
	a.log.Warn().Str("refusal", d.Message).Int("suspects", len(suspects)).Int("held_back", len(held)).
		Msg("nginx refused the configuration without naming a file; trying again without half of the streams changed")
	return true
}

// baseline returns the files nginx last took: in this pass, or before it
// (nil when nginx is being started: then every stream is a suspect).
func (r *Reconciler) baseline(a *apply) map[string][]byte {
	switch {
	case a.lastGood != nil:
		return a.lastGood
	case r.appliedFiles != nil:
		return r.appliedFiles
	case a.running:
		return a.onDisk
	}
	return nil
}

// suspects returns the streams whose desired file differs from base and
// that are not held back, in a stable order.
func (a *apply) suspects(base map[string][]byte) []stream.ID {
	var ids []stream.ID
	for name, f := range a.desired {
		if id := f.spec.ID(); !a.heldBack[id] && !bytes.Equal(base[name], f.body) {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(x, y stream.ID) int { return strings.Compare(x.String(), y.String()) })
	return ids
}

// holdBack gives the streams held back their file in base, or none.
func (a *apply) holdBack(desired map[string]file, base map[string][]byte, prefix string) map[string]file {
	for id := range a.heldBack {
		name := nginxconf.FileName(prefix, id)
		f, ok := desired[name]
		if !ok {
			continue
		}
		if b, ok := base[name]; ok {
			f.body = b
			desired[name] = f
		} else {
			delete(desired, name)
		}
	}
	return desired
}
