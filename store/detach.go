package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/streamconductor/stream-conductor/desired"
)

// ErrDetached: the database file the store has open is no longer the file
// at its path (deleted, or replaced with mv or a copy): a write committed
// now would go into a file that nobody will open again, so writes are
// refused until the daemon is restarted on the file now at the path. It
// is a desired.ErrUnavailable.
var ErrDetached error = &unavailableError{"the state database was deleted or replaced while stream-conductor was running"}

// unavailableError is an error of its own that is also
// desired.ErrUnavailable, saying only its own message.
type unavailableError struct{ msg string }

func (e *unavailableError) Error() string { return e.msg }
func (e *unavailableError) Unwrap() error { return desired.ErrUnavailable }

// Check reports whether the store can take writes: nil while the file at
// its path is the one it has open. It costs one stat(2). Once the file is
// found deleted or replaced, the store stays detached until it is opened
// again, even if the same file comes back: writes it refused meanwhile
// must not reappear half-known.
func (s *Store) Check() error {
	s.detachMu.Lock()
	defer s.detachMu.Unlock()
	if s.detached != nil {
		return s.detached
	}
	fi, err := os.Stat(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.detached = s.detachedError("was deleted")
	case err != nil:
		return fmt.Errorf("check the state database %s: %w", s.path, err)
	case !os.SameFile(fi, s.file):
		s.detached = s.detachedError("was replaced by another file")
	}
	return s.detached
}

// detachedError says what happened to the file and how to recover.
func (s *Store) detachedError(what string) error {
	return fmt.Errorf("%w: %s %s after it was opened; writes are refused so that none is acknowledged into a file that the next start would not read, and nginx keeps forwarding the current streams; "+
		"to recover: save the state in use with GET /v1/backup (it reads the file still open), put that file (or the backup you meant to restore) at %s, and restart stream-conductor",
		ErrDetached, s.path, what, s.path)
}
