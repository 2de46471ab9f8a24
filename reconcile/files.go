package reconcile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/streamconductor/stream-conductor/nginxconf"
)

// tmpMarker is in the name of every temporary file we create; such names
// never end in ".conf", so nginx's include glob never sees a half-written
// file.
const tmpMarker = ".tmp-"

// writeAtomic replaces dir/name with data: a temporary file in the same
// directory is written, fsynced and renamed over the target. The caller
// fsyncs the directory once a batch of renames is done (syncDir).
func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+tmpMarker+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readOurs returns the contents of every file in dir whose name is one of
// ours (nginxconf.ParseFileName), and removes temporary files of ours that
// a crash left behind. Other files are never touched.
func readOurs(dir, prefix string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := make(map[string][]byte)
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "."+prefix) && strings.Contains(name, ".conf"+tmpMarker) {
			os.Remove(filepath.Join(dir, name))
			continue
		}
		if _, ok := nginxconf.ParseFileName(prefix, name); !ok || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		files[name] = b
	}
	return files, nil
}
