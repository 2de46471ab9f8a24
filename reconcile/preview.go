package reconcile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/streamconductor/stream-conductor/internal/safefile"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// Preview returns the file a spec would be written to, what would be
// written, and what the file holds now (nil when there is none, or when
// it is not a regular file: a symlink is never followed, a FIFO never
// opened for reading), changing nothing: the API's dry runs. When the
// spec cannot be rendered, the error wraps nginxconf.ErrNotRenderable and current
// is still returned.
func (r *Reconciler) Preview(s stream.Spec) (name string, body, current []byte, err error) {
	return r.previewIn(r.cfg.Dir, s)
}

// previewIn is Preview with s's file in dir.
func (r *Reconciler) previewIn(dir string, s stream.Spec) (name string, body, current []byte, err error) {
	c := r.renderNow(s, r.resolver.Generation())
	name = nginxconf.FileName(r.cfg.Render.Prefix, s.ID())
	current, err = safefile.ReadRegular(filepath.Join(dir, name))
	switch {
	case errors.Is(err, fs.ErrNotExist), err == nil && bytes.Equal(current, safefile.NotRegular):
		current, err = nil, nil
	case err != nil:
		return name, nil, nil, err
	}
	if c.fail != "" {
		return name, nil, current, fmt.Errorf("%w: %s", nginxconf.ErrNotRenderable, c.fail)
	}
	return name, c.body, current, nil
}
