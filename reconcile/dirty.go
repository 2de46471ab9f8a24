package reconcile

import (
	"errors"
	"io/fs"
	"path/filepath"

	"github.com/streamconductor/stream-conductor/internal/safefile"
)

// dirty notes what the watcher saw change since the last pass.
type dirty struct {
	names  map[string]bool // files of ours touched
	rescan bool            // look at everything
}

// markDirty is the watcher's side: a file of ours changed (name), or
// anything may have (name == "").
func (r *Reconciler) markDirty(name string) {
	r.dirtyMu.Lock()
	defer r.dirtyMu.Unlock()
	if name == "" {
		r.dirty.rescan = true
		return
	}
	if r.dirty.names == nil {
		r.dirty.names = map[string]bool{}
	}
	r.dirty.names[name] = true
}

func (r *Reconciler) takeDirty() dirty {
	r.dirtyMu.Lock()
	defer r.dirtyMu.Unlock()
	d := r.dirty
	r.dirty = dirty{}
	return d
}

// observe returns our files as they are on disk. With a working watcher
// and no full rescan due, it starts from what the last pass left there and
// reads only the files the watcher saw change: O(changed), not O(streams).
// Otherwise (first pass, resync, watcher trouble) it reads the directory.
func (r *Reconciler) observe() (map[string][]byte, error) {
	d := r.takeDirty()
	if d.rescan || r.lastWritten == nil || !r.watching.Load() {
		return readOurs(r.cfg.Dir, r.cfg.Render.Prefix)
	}
	onDisk := make(map[string][]byte, len(r.lastWritten)+len(d.names))
	for name, b := range r.lastWritten {
		onDisk[name] = b
	}
	for name := range d.names {
		b, err := safefile.ReadRegular(filepath.Join(r.cfg.Dir, name))
		switch {
		case err == nil:
			onDisk[name] = b
		case errors.Is(err, fs.ErrNotExist):
			delete(onDisk, name)
		default:
			return nil, err
		}
	}
	return onDisk, nil
}
