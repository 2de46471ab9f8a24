package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// A database file deleted or replaced under a running store: writes are
// refused with ErrDetached saying what happened and how to recover, they
// stay refused if the file comes back, and reads keep serving the state.
func TestWritesRefusedOnceTheFileIsGone(t *testing.T) {
	for _, tc := range []struct {
		name, what string
		do         func(path string) error
	}{
		{"deleted", "was deleted", os.Remove},
		{"replaced", "was replaced", func(path string) error {
			if err := os.WriteFile(path+".new", []byte("another file"), 0o600); err != nil {
				return err
			}
			return os.Rename(path+".new", path)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, _, err := s.Put(spec(stream.TCP, 9000, "10.0.0.1:1"), Match{}); err != nil || s.Check() != nil {
				t.Fatalf("put before: %v, check %v", err, s.Check())
			}
			if err := tc.do(path); err != nil {
				t.Fatal(err)
			}
			_, _, err = s.Put(spec(stream.TCP, 9001, "10.0.0.1:1"), Match{})
			if !errors.Is(err, ErrDetached) || !strings.Contains(err.Error(), tc.what) || !strings.Contains(err.Error(), "restart") {
				t.Fatalf("put after the file %s: %v", tc.name, err)
			}
			if _, _, err := s.Delete(stream.MustParseID("tcp/9000"), Match{}); !errors.Is(err, ErrDetached) {
				t.Fatalf("delete: %v", err)
			}
			if err := s.AppendAudit(desired.AuditRecord{Request: "PUT /"}); !errors.Is(err, ErrDetached) {
				t.Fatalf("audit: %v", err)
			}
			if !errors.Is(s.Check(), ErrDetached) || !errors.Is(s.Check(), desired.ErrUnavailable) {
				t.Fatalf("check: %v, want ErrDetached, a desired.ErrUnavailable", s.Check())
			}
			if l, rev := s.List(); len(l) != 1 || rev != 1 {
				t.Fatalf("reads: %d streams at revision %d", len(l), rev)
			}
		})
	}
}

// Moving the file away and back still leaves the store detached: it
// refused writes meanwhile, and only a restart opens the file at the path.
func TestDetachedStaysDetached(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	os.Rename(path, path+".moved")
	if !errors.Is(s.Check(), ErrDetached) {
		t.Fatal("moved away: not detached")
	}
	os.Rename(path+".moved", path)
	if _, _, err := s.Put(spec(stream.TCP, 9000, "10.0.0.1:1"), Match{}); !errors.Is(err, ErrDetached) {
		t.Fatalf("put after the file came back: %v", err)
	}
}

// A write that commits in the moment the file leaves the path is in the
// file the store has open (and so in its backup): it is told so, and the
// store's memory holds it, as the file does.
func TestWriteCommittedAsTheFileGoesIsKeptInMemory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	afterCommit = func() { os.Remove(path) }
	defer func() { afterCommit = nil }()
	_, _, err = s.Put(spec(stream.TCP, 9000, "10.0.0.1:1"), Match{})
	afterCommit = nil
	if !errors.Is(err, ErrDetached) || !strings.Contains(err.Error(), "in the detached file") {
		t.Fatalf("put as the file went: %v", err)
	}
	if _, err := s.Get(stream.MustParseID("tcp/9000")); err != nil {
		t.Fatalf("the committed write is not in memory: %v", err)
	}
	var b bytes.Buffer
	if err := s.Backup(&b, func(desired.BackupInfo) {}); err != nil || b.Len() == 0 {
		t.Fatalf("backup of the detached file: %v", err)
	}
}
