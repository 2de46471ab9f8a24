package httpapi

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/streamconductor/stream-conductor/desired"
)

// backup streams a consistent snapshot of the desired state (the bbolt
// file): stop the daemon, put it in place of DATA_DIR/state.db and start
// again to restore. Its name carries the revision it holds.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) error {
	begun := false
	err := s.store.Backup(w, func(b desired.BackupInfo) {
		begun = true
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="stream-conductor-%d.db"`, b.Revision))
		w.Header().Set("Content-Length", strconv.FormatInt(b.Size, 10))
	})
	if err != nil && !begun {
		return fmt.Errorf("backup: %w", err)
	}
	if err != nil {
		// Headers are gone; the client sees a short body.
		s.log.Error().Err(err).Msg("backup")
	}
	return nil
}
