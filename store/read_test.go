package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// Read sees what a closed store holds, leaves the file's bytes as they
// were, is refused while a store holds the file, and creates no file.
func TestReadLeavesTheFileAsItIs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range []stream.Spec{spec(stream.TCP, 9000, "a:1"), spec(stream.UDP, 53, "b:53")} {
		if _, _, err := s.Put(sp, Match{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := Read(path, 50*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("Read while a store holds the file: %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	specs, rev, err := Read(path, 0)
	if err != nil || rev != 2 || len(specs) != 2 {
		t.Fatalf("Read = %d specs at %d, %v; want 2 at 2", len(specs), rev, err)
	}
	got := map[string]string{}
	for _, sp := range specs {
		got[sp.ID().String()] = sp.Backends[0]
	}
	if got["tcp/9000"] != "a:1" || got["udp/53"] != "b:53" {
		t.Fatalf("Read = %v", got)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("Read changed the file")
	}

	missing := filepath.Join(t.TempDir(), "state.db")
	if _, _, err := Read(missing, 0); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Read of a missing file: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Read created the file")
	}
	junk := filepath.Join(t.TempDir(), "junk.db")
	os.WriteFile(junk, bytes.Repeat([]byte("x"), 8192), 0o600)
	if _, _, err := Read(junk, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read of a file that is no database: %v", err)
	}
}
