package httpapi

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/writes"
)

// change is what a write did to a stream, noted by the handler for the
// audit log.
type change struct {
	requestID     string
	token         string // the caller's token id ("" without tokens)
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
// (writes.Config.OnUndo): it records an audit entry with route "undo"
// (desired.OpUndo), the request id of the refused write, before the spec
// nginx refused and after what was put back (null: the stream is gone).
// Nobody asked for the undo, so the request's fields (remote, token,
// method, path, status) are empty.
func AuditUndos(st interface {
	AppendAudit(desired.AuditRecord) error
}, log zerolog.Logger) func(writes.Undo) {
	return func(u writes.Undo) {
		refused := u.Refused
		rec := desired.AuditRecord{Time: time.Now().UTC(), RequestID: u.By, Operation: desired.OpUndo, Stream: u.Stream,
			Before: &refused, After: u.Restored, Result: UndoResult + ": " + u.Reason}
		if err := st.AppendAudit(rec); err != nil {
			log.Error().Err(err).Str("stream", u.Stream).Str("component", "httpapi").Msg("audit log: an undo")
		}
	}
}

// recordAudit appends the record of a write request: the route names the
// operation, "METHOD PATH" the request, the status its outcome.
// auditPath is the request's path, marked when it only asked what a
// write would do (a dry run changes nothing, and its entry says so).
func auditPath(r *http.Request) string {
	if isDryRun(r) {
		return r.URL.Path + "?dry_run=true"
	}
	return r.URL.Path
}

func (s *Server) recordAudit(r *http.Request, c *change, id, token, route string, status int, result string) {
	rec := desired.AuditRecord{
		Time: time.Now().UTC(), RequestID: id, Source: r.RemoteAddr, Actor: token,
		Operation: route, Request: r.Method + " " + auditPath(r), Stream: c.stream,
		Before: c.before, After: c.after, Outcome: status, Result: result,
	}
	if err := s.store.AppendAudit(rec); err != nil {
		s.log.Error().Err(err).Str("request_id", id).Msg("audit log")
	}
}

// auditEntry is an audit record as /v1/audit shows it.
type auditEntry struct {
	Seq       uint64       `json:"seq"`
	Time      time.Time    `json:"time"`
	RequestID string       `json:"request_id"`
	Remote    string       `json:"remote"`
	Token     string       `json:"token"` // which token, never the token
	Method    string       `json:"method"`
	Path      string       `json:"path"`
	Route     string       `json:"route"`
	Stream    string       `json:"stream,omitempty"`
	Before    *stream.Spec `json:"before"`
	After     *stream.Spec `json:"after"`
	Status    int          `json:"status"`
	Result    string       `json:"result"` // "ok" or the error code
	// Compacted, when set, says what was left out of Before and After to
	// keep the entry within the store's bound.
	Compacted string `json:"compacted,omitempty"`
}

// entryOf is rec as /v1/audit shows it: its request "METHOD PATH" split
// in two (both empty when the daemon acted of itself), its token id
// redacted if it is of the legacy form.
func entryOf(rec desired.AuditRecord) auditEntry {
	method, path, _ := strings.Cut(rec.Request, " ")
	return auditEntry{Seq: rec.Seq, Time: rec.Time, RequestID: rec.RequestID, Remote: rec.Source,
		Token: redactLegacyTokenID(rec.Actor), Method: method, Path: path, Route: rec.Operation, Stream: rec.Stream,
		Before: rec.Before, After: rec.After, Status: rec.Outcome, Result: rec.Result, Compacted: rec.Compacted}
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
	recs, err := s.store.Audit(before, limit)
	if err != nil {
		return err
	}
	entries := make([]auditEntry, len(recs))
	for i, rec := range recs {
		entries[i] = entryOf(rec)
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
