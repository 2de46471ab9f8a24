package reconcile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// Preview returns the file a spec would be written to, what would be
// written, and what the file holds now (nil when there is none), changing
// nothing: the API's dry runs.
func (r *Reconciler) Preview(s stream.Spec) (name string, body, current []byte, err error) {
	name, body = nginxconf.Render(s, r.cfg.Render)
	current, err = os.ReadFile(filepath.Join(r.cfg.Dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return name, body, nil, nil
	}
	return name, body, current, err
}
