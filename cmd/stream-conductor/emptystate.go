package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"
)

// checkEmptyState refuses to start on a state database that was never
// written (no stream, revision 0) while STREAM_CONFIG_PATH holds stream
// files of ours: applying it would close every port. That is a lost or
// replaced state.db far more often than an operator who wants everything
// gone, who says so with ALLOW_EMPTY_STATE. A database whose streams were
// all deleted (revision > 0) is applied: its leftover files are those of
// deletes the daemon had no time to apply. It runs before nginx is
// touched, so nginx keeps forwarding the streams of those files while the
// daemon refuses.
func checkEmptyState(streams int, rev uint64, dir, prefix, dbPath string, allow bool, log zerolog.Logger) error {
	if streams > 0 || rev > 0 {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(dir, prefix+"*.conf"))
	if err != nil {
		return fmt.Errorf("list the stream files in %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil
	}
	if allow {
		log.Warn().Int("files", len(files)).Str("stream_config_path", dir).
			Msg("ALLOW_EMPTY_STATE: the state database holds no stream; removing every stream file of ours")
		return nil
	}
	names := make([]string, 0, 3)
	for _, f := range files[:min(3, len(files))] {
		names = append(names, filepath.Base(f))
	}
	if len(files) > 3 {
		names = append(names, "...")
	}
	return fmt.Errorf("refusing to start: the state database %s is new or empty (it never held a stream), but %s holds %d stream files of ours (%s) that starting would remove, closing their ports; "+
		"nginx keeps forwarding them meanwhile. If state.db was lost or replaced, restore a backup into %s and start again; "+
		"or start with ALLOW_EMPTY_STATE=true (-allow-empty-state=true), which removes them, and `stream-conductor import` the streams from an export; "+
		"set ALLOW_EMPTY_STATE=true alone if you do want every stream gone",
		dbPath, dir, len(files), strings.Join(names, ", "), dbPath)
}
