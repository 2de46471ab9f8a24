package main

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/writes"
)

// undoResult is the audit result of a write the write path undid.
const undoResult = "undone: nginx refused it"

// auditUndo records in the audit log each write the write path undid:
// route "undo", the request id of the refused write, before the spec nginx
// refused, after what was put back (null: the stream is gone).
func auditUndo(st *store.Store, log zerolog.Logger) func(writes.Undo) {
	return func(u writes.Undo) {
		refused := u.Refused
		e := store.AuditEntry{Time: time.Now().UTC(), RequestID: u.By, Route: "undo", Stream: u.Stream,
			Before: &refused, After: u.Restored, Result: undoResult + ": " + u.Reason}
		if err := st.AppendAudit(e); err != nil {
			log.Error().Err(err).Str("stream", u.Stream).Msg("audit log: an undo")
		}
	}
}
