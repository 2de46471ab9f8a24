package reconcile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

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

// notRegular stands for the contents of an entry with one of our names
// that is not a regular file (a FIFO, a symlink, a socket, a device): it
// is never opened, and since no rendered file has these bytes the pass
// sees drift and replaces it with our regular file.
var notRegular = []byte("# stream-conductor: not a regular file\n")

// readRegular reads the regular file at path. It never follows a symlink
// and never blocks on a FIFO: anything but a regular file reads as
// notRegular.
func readRegular(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENXIO): // a symlink, a socket
		return notRegular, nil
	case err != nil:
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return notRegular, nil
	}
	return io.ReadAll(f)
}

// readOurs returns the contents of every file in dir whose name is one of
// ours (nginxconf.ParseFileName), and removes temporary files of ours that
// a crash left behind. Other files are never touched. Directories are
// skipped; other entries that are not regular files read as notRegular.
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
		if !e.Type().IsRegular() {
			files[name] = notRegular
			continue
		}
		b, err := readRegular(filepath.Join(dir, name))
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
	f, perr := os.CreateTemp(dir, "."+prefix+"probe.conf"+tmpMarker+"*")
	if perr != nil {
		return false
	}
	f.Close()
	return os.Remove(f.Name()) == nil
}
