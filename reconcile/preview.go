package reconcile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/streamconductor/stream-conductor/stream"
)

// ErrNotRenderable means a spec cannot be rendered: a host name that does
// not resolve, or an address a backend rule refuses.
var ErrNotRenderable = errors.New("stream cannot be applied")

// Preview returns the file a spec would be written to, what would be
// written, and what the file holds now (nil when there is none), changing
// nothing: the API's dry runs.
func (r *Reconciler) Preview(s stream.Spec) (name string, body, current []byte, err error) {
	c := r.renderNow(s, r.resolver.Generation())
	if c.fail != "" {
		return c.name, nil, nil, fmt.Errorf("%w: %s", ErrNotRenderable, c.fail)
	}
	name, body = c.name, c.body
	current, err = os.ReadFile(filepath.Join(r.cfg.Dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return name, body, nil, nil
	}
	return name, body, current, err
}
