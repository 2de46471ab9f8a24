package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

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
	runWatch(ctx, r.log, []*Reconciler{r}, nil)
}

// runWatch is the watcher of one or more reconcilers, each with its own
// directory (the shards of a Pool, in subdirectories of the first one's):
// one inotify instance routes each event to the reconciler whose directory
// it is in. Reconcilers sent on added are watched from then on.
func runWatch(ctx context.Context, log zerolog.Logger, first []*Reconciler, added <-chan *Reconciler) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn().Err(err).Msg("cannot watch the config directory; drift is found by the periodic resync only")
		for {
			select { // shards that start later are not watched either
			case <-ctx.Done():
				return
			case <-added:
			}
		}
	}
	defer w.Close()
	byDir := map[string]*Reconciler{}
	root := absDir(first[0].cfg.Dir)
	if err := w.Add(filepath.Dir(root)); err != nil {
		log.Warn().Err(err).Str("dir", filepath.Dir(root)).Msg("cannot watch the parent of the config directory")
	}
	add := func(r *Reconciler) {
		dir := absDir(r.cfg.Dir)
		byDir[dir] = r
		w.Add(dir) // fails while the directory is missing; its Create re-adds it
		r.watching.Store(true)
	}
	for _, r := range first {
		add(r)
	}
	defer func() {
		for _, r := range byDir {
			r.watching.Store(false)
		}
	}()

	pending := map[*Reconciler]bool{}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-added:
			add(r)
			continue
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if r, isDir := byDir[ev.Name]; isDir {
				if ev.Has(fsnotify.Create) {
					w.Add(ev.Name)
				}
				r.markDirty("")
				pending[r] = true
				if ev.Name == root { // the shards' directories went with it, or come back
					for _, r := range byDir {
						w.Add(absDir(r.cfg.Dir))
						r.markDirty("")
						pending[r] = true
					}
				}
			} else if r, in := byDir[filepath.Dir(ev.Name)]; in {
				name := filepath.Base(ev.Name)
				if _, ours := nginxconf.ParseFileName(r.cfg.Render.Prefix, name); !ours {
					continue
				}
				if r.isOwn(name, ev.Name) {
					continue // a pass's own write or removal
				}
				r.markDirty(name)
				pending[r] = true
				if ev.Has(fsnotify.Create) {
					go unblockFIFO(ctx, ev.Name)
				}
			} else {
				continue
			}
			settle.Reset(watchSettle)
		case <-settle.C:
			for r := range pending {
				r.Trigger()
			}
			clear(pending)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			for _, r := range byDir {
				r.markDirty("") // events may be lost (overflow): read everything
			}
			log.Warn().Err(err).Msg("config directory watch")
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
