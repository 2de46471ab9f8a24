// Package safefile writes files so that a reader sees the old content or
// the new, never a mix, and reads them without following a symlink or
// blocking on a FIFO someone put in their place. The reconciler's stream
// files and the nginx driver's main configuration are written with it.
package safefile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// TmpMarker is in the name of every temporary file Write creates; such
// names never end in ".conf", so nginx's include glob never sees a
// half-written file.
const TmpMarker = ".tmp-"

// Write replaces dir/name with data: a temporary file in the same
// directory is written, fsynced and renamed over the target. The caller
// fsyncs the directory once a batch of renames is done (SyncDir).
func Write(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+TmpMarker+"*")
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

// SyncDir makes renames and removals in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// NotRegular stands for the contents of an entry that is not a regular
// file (a FIFO, a symlink, a socket, a device): it is never opened, and
// since no rendered file has these bytes a comparison with what should be
// there sees a difference, and the file is replaced.
var NotRegular = []byte("# stream-conductor: not a regular file\n")

// ReadRegular reads the regular file at path. It never follows a symlink
// and never blocks on a FIFO: anything but a regular file reads as
// NotRegular.
func ReadRegular(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENXIO): // a symlink, a socket
		return NotRegular, nil
	case err != nil:
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return NotRegular, nil
	}
	return io.ReadAll(f)
}
