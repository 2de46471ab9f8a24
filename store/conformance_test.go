package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/desired/conformance"
	"github.com/streamconductor/stream-conductor/stream"
)

var _ desired.State = (*Store)(nil)

func TestConformance(t *testing.T) {
	open := func(t *testing.T, path string, o Options) desired.State {
		s, err := Open(path, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	conformance.Run(t, conformance.Impl{
		Open: func(t *testing.T, o conformance.Options) desired.State {
			return open(t, filepath.Join(t.TempDir(), "state.db"), Options{AuditRetention: o.AuditRetention})
		},
		Restore: func(t *testing.T, backup []byte) desired.State {
			path := filepath.Join(t.TempDir(), "restored.db")
			if err := os.WriteFile(path, backup, 0o600); err != nil {
				t.Fatal(err)
			}
			return open(t, path, Options{})
		},
	})
}

// A reopened store has no history before its opening: asking for it says
// so rather than answering with nothing.
func TestSinceBeforeOpenIsCompacted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for port := 9000; port < 9003; port++ {
		if _, _, err := s.Put(spec(stream.TCP, port, "10.0.0.1:1"), Match{}); err != nil {
			t.Fatal(err)
		}
	}
	if c, err := s.Since(1); err != nil || len(c) != 2 {
		t.Fatalf("since 1 = %+v, %v; want the two later writes", c, err)
	}
	s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Since(1); err != desired.ErrCompacted {
		t.Fatalf("since 1 after reopening: %v, want ErrCompacted", err)
	}
	if c, err := s.Since(3); err != nil || len(c) != 0 {
		t.Fatalf("since the current revision: %+v, %v", c, err)
	}
}
