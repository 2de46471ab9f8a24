package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/streamconductor/stream-conductor/desired"
)

// Error is an API failure: the status and the body the client sees, kept
// apart from the cause that only the log sees.
type Error struct {
	Status  int
	Code    string
	Message string
	Field   string
	// Extra is merged into the response body beside "error" (the stream
	// of a write that timed out, say).
	Extra map[string]any
	Cause error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Code, e.Message, e.Cause)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Cause }

// Error codes, one per kind of failure a client can act on.
const (
	CodeInvalid          = "invalid"            // 400: a field is wrong
	CodeMalformed        = "malformed_request"  // 400: the body is not the JSON we take
	CodeUnauthorized     = "unauthorized"       // 401: no or a bad token
	CodeForbidden        = "forbidden"          // 403: not allowed (read-only token, refused backend, host)
	CodeNotFound         = "not_found"          // 404
	CodeMethodNotAllowed = "method_not_allowed" // 405
	CodePortInUse        = "port_in_use"        // 409: another process holds the port
	CodePortConflict     = "port_conflict"      // 409: another stream listens on a port of the write
	CodeNoFreePort       = "no_free_port"       // 409
	CodeLimitReached     = "limit_reached"      // 507: nginx's open-file limit allows no more streams
	CodeRevision         = "revision_mismatch"  // 412
	CodeTooLarge         = "body_too_large"     // 413
	CodeMediaType        = "unsupported_media_type"
	CodeNginxRejected    = "nginx_rejected"    // 422
	CodeApplyTimeout     = "apply_timeout"     // 503
	CodeNotApplied       = "not_applied"       // 503: stored, but nginx could not be made to follow (a file that cannot be removed)
	CodeNginxUnavailable = "nginx_unavailable" // 503
	CodeStoreUnavailable = "store_unavailable" // 503: the desired state takes no writes (state.db was deleted or replaced under the daemon, etcd unreachable)
	CodeStateHeld        = "state_held"        // 503: the node holds its copy of the fleet's state until an operator confirms (POST /v1/state/confirm)
	CodeInternal         = "internal"          // 500
)

func errInvalid(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

func errNotFound(format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf(format, args...)}
}

// errorBody is the JSON shape of every error.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// asAPIError turns any error into the one the client sees: an *Error as it
// is, anything else as a 500 that shows no internals.
func asAPIError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, desired.ErrHeld) {
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeStateHeld, Message: err.Error()}
	}
	if errors.Is(err, desired.ErrUnavailable) {
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeStoreUnavailable, Message: err.Error()}
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error; see the daemon's log", Cause: err}
}

func writeError(w http.ResponseWriter, e *Error) {
	body := map[string]any{"error": errorBody{Code: e.Code, Message: e.Message, Field: e.Field}}
	for k, v := range e.Extra {
		body[k] = v
	}
	writeJSON(w, e.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"internal error; see the daemon's log"}}`)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// A length, not chunks: the client has the whole answer at the flush,
	// before the audit record is written.
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
