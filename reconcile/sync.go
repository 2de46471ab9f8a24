package reconcile

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/internal/safefile"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// desiredFiles renders every spec that is not quarantined; a quarantined
// stream keeps its last good file, if it has one. A spec that cannot be
// rendered (a name that never resolved, an address a backend rule
// refuses) is failed with the reason (r.unrenderable) and keeps the file
// nginx last loaded for it, if any.
func (r *Reconciler) desiredFiles(specs []stream.Spec) map[string]file {
	files := make(map[string]file, len(specs))
	unrenderable := map[stream.ID]string{}
	gen := r.resolver.Generation()
	var stale []stream.Spec
	for _, s := range specs {
		id := s.ID()
		if q, ok := r.quarantine[id]; ok {
			if q.keep != nil {
				files[nginxconf.FileName(r.cfg.Render.Prefix, s.ID())] = file{spec: s, body: q.keep}
			}
			continue
		}
		c, fresh := r.cached(id, s, gen)
		if !fresh {
			stale = append(stale, s) // rendered below, names looked up together
			continue
		}
		r.addFile(files, unrenderable, s, id, c)
	}
	if len(stale) > 0 {
		r.prefetch(stale)
		for _, s := range stale {
			r.addFile(files, unrenderable, s, s.ID(), r.render(s))
		}
	}
	r.noteUnrenderable(unrenderable)
	return files
}

// addFile adds s's render c to files, or, when s cannot be rendered,
// notes why in unrenderable and keeps the file nginx last loaded for it:
// as with a rejected update, the stream keeps its last good addresses.
func (r *Reconciler) addFile(files map[string]file, unrenderable map[stream.ID]string, s stream.Spec, id stream.ID, c rendered) {
	if c.fail == "" {
		files[c.name] = file{spec: s, body: c.body}
		return
	}
	unrenderable[id] = c.fail
	if b, ok := r.appliedFiles[c.name]; ok {
		files[c.name] = file{spec: s, body: b}
	} else if b, ok := r.bootFiles[c.name]; ok && !bytes.Equal(b, safefile.NotRegular) {
		files[c.name] = file{spec: s, body: b}
	}
}

// noteUnrenderable records which streams cannot be rendered, counting and
// logging those that are new or fail for a new reason.
func (r *Reconciler) noteUnrenderable(unrenderable map[stream.ID]string) {
	if maps.Equal(unrenderable, r.unrenderable) {
		return
	}
	for id, why := range unrenderable {
		if r.unrenderable[id] != why {
			r.count(func(c *stream.NodeCounters) { c.Quarantined++ })
			r.log.Warn().Stringer("stream", id).Str("reason", why).Msg("stream failed; left out of the configuration")
		}
	}
	r.unrenderable = unrenderable
	r.quarantineGen++
}

// withoutHeld drops held (drifted) files from desired: the pass keeps its
// hands off them.
func (r *Reconciler) withoutHeld(desired map[string]file) map[string]file {
	for name := range r.held {
		delete(desired, name)
	}
	return desired
}

// bodies returns the contents of each desired file by name.
func bodies(desired map[string]file) map[string][]byte {
	b := make(map[string][]byte, len(desired))
	for name, f := range desired {
		b[name] = f.body
	}
	return b
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
		r.expectOwn(name, body, false)
		if err := safefile.Write(r.cfg.Dir, name, body); err != nil {
			r.forgetOwn(name)
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
		r.expectOwn(name, nil, true)
		if err := os.Remove(filepath.Join(r.cfg.Dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			r.forgetOwn(name)
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

// syncDesired makes the directory hold desired (sync). A file that
// cannot be replaced or removed while the directory takes other files
// (immutable, a directory in its place) fails only its stream: the stream
// is quarantined with the error, its last good file (if any) staying, and
// the others go on. It returns desired without those streams.
func (r *Reconciler) syncDesired(log zerolog.Logger, specs []stream.Spec, desired map[string]file, onDisk, onNow map[string][]byte) (map[string]file, error) {
	for range len(specs) + 2 {
		failed := map[string]error{}
		if _, err := r.sync(log, bodies(desired), onNow, failed); err != nil {
			return nil, err
		}
		if r.failFiles(log, specs, failed, onDisk) == 0 {
			return desired, nil
		}
		desired = r.withoutHeld(r.desiredFiles(specs))
	}
	return desired, nil
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
