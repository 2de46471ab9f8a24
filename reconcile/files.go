package reconcile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/streamconductor/stream-conductor/internal/safefile"
	"github.com/streamconductor/stream-conductor/nginxconf"
)

// readOurs returns the contents of every file in dir whose name is one of
// ours (nginxconf.ParseFileName), and removes temporary files of ours that
// a crash left behind. Other files are never touched. Directories are
// skipped; other entries that are not regular files read as safefile.NotRegular.
func readOurs(dir, prefix string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := make(map[string][]byte)
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "."+prefix) && strings.Contains(name, ".conf"+safefile.TmpMarker) {
			os.Remove(filepath.Join(dir, name))
			continue
		}
		if _, ok := nginxconf.ParseFileName(prefix, name); !ok || e.IsDir() {
			continue
		}
		if !e.Type().IsRegular() {
			files[name] = safefile.NotRegular
			continue
		}
		b, err := safefile.ReadRegular(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since ReadDir
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		files[name] = b
	}
	return files, nil
}

// fileOnly reports whether err, from replacing or removing one file in
// dir, concerns that file alone (it is immutable, or a directory) rather
// than the directory: the directory still takes a new file. Failures to
// write a temporary file (a full or read-only directory) are never the
// file's alone.
func fileOnly(dir, prefix string, err error) bool {
	var le *os.LinkError
	var pe *os.PathError
	if !errors.As(err, &le) && !(errors.As(err, &pe) && pe.Op == "remove") {
		return false
	}
	f, perr := os.CreateTemp(dir, "."+prefix+"probe.conf"+safefile.TmpMarker+"*")
	if perr != nil {
		return false
	}
	f.Close()
	return os.Remove(f.Name()) == nil
}

func absDir(d string) string {
	a, err := filepath.Abs(d)
	if err != nil {
		return d
	}
	return a
}
