package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestEmptyStateOverOurFilesIsRefused(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "other.conf"), nil, 0o644)
	check := func(streams int, rev uint64, allow bool) error {
		return checkEmptyState(streams, rev, dir, "stream-", "/d/state.db", allow, zerolog.Nop())
	}
	if err := check(0, 0, false); err != nil {
		t.Fatalf("no file of ours: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "stream-tcp-9000.conf"), nil, 0o644)
	err := check(0, 0, false)
	if err == nil || !strings.Contains(err.Error(), "stream-tcp-9000.conf") || !strings.Contains(err.Error(), "restore a backup into /d/state.db") || !strings.Contains(err.Error(), "ALLOW_EMPTY_STATE=true") {
		t.Fatalf("empty new state over a file of ours: %v", err)
	}
	for _, tc := range []struct {
		streams int
		rev     uint64
		allow   bool
	}{{1, 1, false}, {0, 7, false}, {0, 0, true}} {
		if err := check(tc.streams, tc.rev, tc.allow); err != nil {
			t.Errorf("%+v: %v", tc, err)
		}
	}
}
