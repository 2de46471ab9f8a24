package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/streamconductor/stream-conductor/nginxconf"
)

// watchSettle is how long the watcher waits for a burst of file events to
// end before it asks for a pass, so that a tool writing a file in several
// steps is seen once, finished.
const watchSettle = 100 * time.Millisecond

// watch asks for a pass whenever a file of ours in the config directory is
// written, created, removed or renamed, and when the directory itself is
// removed or created: it watches the parent directory too, so that a
// directory removed and recreated is watched again. Events carry no
// meaning beyond "look again": the pass compares everything. Events for a
// file that is exactly what a pass left there are the passes' own and are
// dropped (isOwn). The periodic resync catches whatever fsnotify misses.
func (r *Reconciler) watch(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		r.log.Warn().Err(err).Msg("cannot watch the config directory; drift is found by the periodic resync only")
		return
	}
	defer w.Close()
	r.watching.Store(true)
	defer r.watching.Store(false)
	dir := absDir(r.cfg.Dir)
	if err := w.Add(filepath.Dir(dir)); err != nil {
		r.log.Warn().Err(err).Str("dir", filepath.Dir(dir)).Msg("cannot watch the parent of the config directory")
	}
	w.Add(dir) // fails while the directory is missing; its Create re-adds it

	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			switch {
			case ev.Name == dir:
				if ev.Has(fsnotify.Create) {
					w.Add(dir)
				}
				r.markDirty("")
			case filepath.Dir(ev.Name) == dir:
				name := filepath.Base(ev.Name)
				if _, ours := nginxconf.ParseFileName(r.cfg.Render.Prefix, name); !ours {
					continue
				}
				if r.isOwn(name, ev.Name) {
					continue // a pass's own write or removal
				}
				r.markDirty(name)
				if ev.Has(fsnotify.Create) {
					go unblockFIFO(ctx, ev.Name)
				}
			default:
				continue
			}
			settle.Reset(watchSettle)
		case <-settle.C:
			r.Trigger()
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			r.markDirty("") // events may be lost (overflow): read everything
			r.log.Warn().Err(err).Msg("config directory watch")
		}
	}
}

// unblockFIFO keeps a FIFO named like one of our files from hanging
// nginx: nginx's include opens every match for reading, and an open of a
// FIFO blocks until someone opens it for writing. While the FIFO is there
// (the next pass replaces it), it is opened for writing and closed again
// every fifoPoke, so that a reader waiting on it reads an empty file. It
// gives up after fifoWatch.
func unblockFIFO(ctx context.Context, path string) {
	const fifoPoke, fifoWatch = 20 * time.Millisecond, time.Minute
	tick := time.NewTicker(fifoPoke)
	defer tick.Stop()
	deadline := time.After(fifoWatch)
	for {
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
			return
		}
		// Without a reader this fails at once (ENXIO); with one, the
		// reader sees end of file when it is closed.
		if fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0); err == nil {
			syscall.Close(fd)
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline:
			return
		case <-tick.C:
		}
	}
}
