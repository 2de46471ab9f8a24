package httpapi

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/writes"
)

// change is what a write did to a stream, noted by the handler for the
// audit log.
type change struct {
	requestID     string
	stream        string
	before, after *stream.Spec
}

type changeKey struct{}

// requestID is the id of the request r, as its log line and audit entry
// show it.
func requestID(r *http.Request) string {
	if c, ok := r.Context().Value(changeKey{}).(*change); ok {
		return c.requestID
	}
	return ""
}

// noteChange records that the request took stream id from before to after
// (nil for absent).
func noteChange(r *http.Request, id string, before, after *stream.Spec) {
	if c, ok := r.Context().Value(changeKey{}).(*change); ok {
		c.stream, c.before, c.after = id, before, after
	}
}

// UndoResult begins the result of the audit entry of an undo; nginx's
// message follows.
const UndoResult = "undone: nginx refused it"

// AuditUndos returns what the write path tells of each write it undid
// (writes.Config.OnUndo): it records an audit entry with route "undo",
// the request id of the refused write, before the spec nginx refused and
// after what was put back (null: the stream is gone). Nobody asked for
// the undo, so the request's fields (remote, token, method, path, status)
// are empty.
func AuditUndos(st interface{ AppendAudit(store.AuditEntry) error }, log zerolog.Logger) func(writes.Undo) {
	return func(u writes.Undo) {
		refused := u.Refused
		e := store.AuditEntry{Time: time.Now().UTC(), RequestID: u.By, Route: "undo", Stream: u.Stream,
			Before: &refused, After: u.Restored, Result: UndoResult + ": " + u.Reason}
		if err := st.AppendAudit(e); err != nil {
			log.Error().Err(err).Str("stream", u.Stream).Str("component", "httpapi").Msg("audit log: an undo")
		}
	}
}

func (s *Server) recordAudit(r *http.Request, c *change, id, token, route string, status int, result string) {
	e := store.AuditEntry{
		Time: time.Now().UTC(), RequestID: id, Remote: r.RemoteAddr, Token: token,
		Method: r.Method, Path: r.URL.Path, Route: route, Stream: c.stream,
		Before: c.before, After: c.after, Status: status, Result: result,
	}
	if err := s.store.AppendAudit(e); err != nil {
		s.log.Error().Err(err).Str("request_id", id).Msg("audit log")
	}
}

// audit serves the audit log, newest first: ?limit=N (default 100, at most
// 1000) and ?before=SEQ for the next page.
func (s *Server) audit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return errInvalid("limit", "must be 1-1000")
		}
		limit = n
	}
	var before uint64
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return errInvalid("before", "must be an audit sequence number")
		}
		before = n
	}
	entries, err := s.store.Audit(before, limit)
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []store.AuditEntry{}
	}
	for i := range entries {
		entries[i].Token = redactLegacyTokenID(entries[i].Token)
	}
	out := map[string]any{"entries": entries}
	if len(entries) == limit {
		out["next"] = "/v1/audit?limit=" + strconv.Itoa(limit) + "&before=" + strconv.FormatUint(entries[len(entries)-1].Seq, 10)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// redactLegacyTokenID hides the token ids that entries recorded before
// tokenID used a keyed hash: "write:1a2b3c4d", the first 32 bits of the
// token's SHA-256, which would let anyone who reads the audit log test
// guesses of a token that is still in force. They are shown as "write"
// or "read"; ids of the present form ("write:hmac-...") and "none" pass.
func redactLegacyTokenID(id string) string {
	kind, sum, ok := strings.Cut(id, ":")
	if !ok || (kind != "write" && kind != "read") || len(sum) != 8 {
		return id
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return id
	}
	return kind
}
