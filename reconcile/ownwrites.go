package reconcile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"

	"github.com/streamconductor/stream-conductor/internal/safefile"
)

// The watcher hears the passes' own writes and removals as well as
// everyone else's. A pass records what it leaves at each name before it
// writes or removes the file (ownWrite); the watcher drops an event for a
// name whose file is, when it looks, exactly what the pass left there, so
// that a pass is not followed by a second one that finds nothing to do.
// It compares the file's content now, not the event: an edit by someone
// else that lands after our write, even before our event is read, leaves
// a file that differs, and is seen.

// ownWrite is what a pass left at one name: body, or no file (gone).
type ownWrite struct {
	body []byte
	gone bool
}

// expectOwn records, before the pass writes body at name (or removes the
// file when gone), what the watcher will find there once it has.
func (r *Reconciler) expectOwn(name string, body []byte, gone bool) {
	r.ownMu.Lock()
	defer r.ownMu.Unlock()
	if r.own == nil {
		r.own = make(map[string]*ownWrite)
	}
	r.own[name] = &ownWrite{body: body, gone: gone}
}

// forgetOwn drops what was recorded for name: the write or removal
// failed, so the file is not what expectOwn said.
func (r *Reconciler) forgetOwn(name string) {
	r.ownMu.Lock()
	defer r.ownMu.Unlock()
	delete(r.own, name)
}

// isOwn reports whether the file at path (named name) is now exactly what
// a pass left there, so that an event for it brings nothing new. When it
// is not, what was recorded is dropped: every later event for the name
// counts until a pass writes it again.
func (r *Reconciler) isOwn(name, path string) bool {
	r.ownMu.Lock()
	w := r.own[name]
	r.ownMu.Unlock()
	if w == nil {
		return false
	}
	same := sameAs(w, path)
	r.ownMu.Lock()
	defer r.ownMu.Unlock()
	if r.own[name] != w {
		// A pass recorded a newer write meanwhile: its own event
		// follows; this one is looked at by a pass to be safe.
		return false
	}
	if !same || w.gone {
		// A removal makes one event; a file there later is someone's.
		delete(r.own, name)
	}
	return same
}

// sameAs reports whether the file at path is what w says. Anything that
// is not a regular file, or cannot be read, is not.
func sameAs(w *ownWrite, path string) bool {
	if w.gone {
		_, err := os.Lstat(path)
		return errors.Is(err, fs.ErrNotExist)
	}
	b, err := safefile.ReadRegular(path)
	return err == nil && !bytes.Equal(b, safefile.NotRegular) && bytes.Equal(b, w.body)
}
