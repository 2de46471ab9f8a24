package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/writes"
)

// The write side of the API: every change goes to the write path, and
// what it answers becomes a status and a body here.

// outcome is what a write did.
type outcome struct {
	stored   stream.Spec
	created  bool
	accepted bool // not waited for (?wait=false)
}

// writeOutcome answers a write with the stream: 201 created, 200 replaced
// or unchanged, 202 accepted but not yet applied.
func (s *Server) writeOutcome(w http.ResponseWriter, out outcome) {
	w.Header().Set("ETag", etag(out.stored.Revision))
	code := http.StatusOK
	if out.created {
		code = http.StatusCreated
		w.Header().Set("Location", "/v1/streams/"+out.stored.ID().String())
	}
	if out.accepted {
		code = http.StatusAccepted
	}
	writeJSON(w, code, s.view(out.stored))
}

// write creates or replaces sp if m holds and, unless the client asked not
// to wait, waits for it to be applied. Shared by PUT and the seed route
// createstream.
func (s *Server) write(r *http.Request, sp stream.Spec, m desired.Match) (outcome, error) {
	id := sp.ID()
	res, err := s.writes.Put(r.Context(), sp, m, requestID(r))
	if err != nil {
		if (m.Revision != 0 || m.Present) && errors.Is(err, desired.ErrNotFound) {
			return outcome{}, &Error{Status: http.StatusPreconditionFailed, Code: CodeRevision, Message: "stream " + id.String() + " does not exist"}
		}
		return outcome{}, writesError(err, id.String())
	}
	if res.Changed {
		noteChange(r, res.Stored.ID().String(), res.Prev, &res.Stored)
	}
	return s.settle(r, res)
}

// settle waits until the write res is applied, unless the client asked not
// to wait (?wait=false). A stream nginx refused is answered with 422; the
// write path has undone it by then (removed if it was new, its previous
// spec restored otherwise), and does so as well when nobody waits.
func (s *Server) settle(r *http.Request, res writes.Result) (outcome, error) {
	out := outcome{stored: res.Stored, created: res.Created}
	if noWait(r) {
		out.accepted = true
		return out, nil
	}
	refused, err := s.await(r, res.Pending)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Extra = map[string]any{"stream": s.view(res.Stored)}
		}
		return out, err
	}
	if len(refused) > 0 {
		if res.Changed {
			noteChange(r, res.Stored.ID().String(), res.Prev, res.Prev) // undone
		}
		return out, &Error{Status: http.StatusUnprocessableEntity, Code: CodeNginxRejected, Message: refused[0].Reason}
	}
	return out, nil
}

// await waits at most ApplyTimeout, and no longer than the client, for a
// write to be applied, and returns the streams nginx refused.
func (s *Server) await(r *http.Request, w *writes.Pending) ([]writes.Refusal, error) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ApplyTimeout)
	defer cancel()
	refused, err := w.Wait(ctx)
	if err != nil {
		h := s.applier.NodeStatus()
		msg := fmt.Sprintf("the change is stored but was not applied within %v", s.cfg.ApplyTimeout)
		if s.cfg.Fleet != nil {
			if lag := s.cfg.Fleet.Lagging(w.Revision(), w.Streams()); len(lag) > 0 {
				msg += " by " + strings.Join(lag, ", ")
			}
		}
		if h.LastError != "" {
			return nil, &Error{Status: http.StatusServiceUnavailable, Code: CodeNginxUnavailable, Message: msg + "; nginx: " + h.LastError}
		}
		return nil, &Error{Status: http.StatusServiceUnavailable, Code: CodeApplyTimeout, Message: msg + "; it will be applied when nginx allows"}
	}
	return refused, nil
}

func noWait(r *http.Request) bool {
	v := r.URL.Query().Get("wait")
	return v == "false" || v == "0"
}

// writesError turns an error of the write path (or of the desired state)
// into the one the client sees; id names the stream, if one.
func writesError(err error, id string) error {
	if errors.Is(err, stream.ErrStreamLimit) {
		// Lasts until an operator raises the limit: not a 503 to retry.
		return &Error{Status: http.StatusInsufficientStorage, Code: CodeLimitReached, Field: "listen", Message: err.Error()}
	}
	var held *writes.PortHeldError
	if errors.As(err, &held) {
		return &Error{Status: http.StatusConflict, Code: CodePortInUse, Field: "listen", Message: held.Error()}
	}
	var taken *desired.PortConflictError
	if errors.As(err, &taken) {
		return &Error{Status: http.StatusConflict, Code: CodePortConflict, Field: "listen", Message: taken.Error()}
	}
	var refused *writes.PolicyError
	if errors.As(err, &refused) {
		// A *policy.Violation's text names its rule: "... (rule: loop)".
		field := refused.Field
		if field == "" {
			field = "backends"
		}
		return &Error{Status: http.StatusForbidden, Code: CodeForbidden, Field: field, Message: refused.Error()}
	}
	if e := validationError(err); e != err {
		return e
	}
	return storeError(err, id)
}

func storeError(err error, id string) error {
	switch {
	case errors.Is(err, desired.ErrRevisionMismatch):
		return &Error{Status: http.StatusPreconditionFailed, Code: CodeRevision, Message: "stream " + id + " has changed since that revision; GET it again"}
	case errors.Is(err, desired.ErrExists):
		return &Error{Status: http.StatusPreconditionFailed, Code: CodeRevision, Message: "stream " + id + " already exists"}
	case errors.Is(err, desired.ErrNotFound):
		return errNotFound("no stream %s", id)
	case errors.Is(err, desired.ErrNoFreePort):
		return &Error{Status: http.StatusConflict, Code: CodeNoFreePort, Message: err.Error()}
	}
	return err
}

func validationError(err error) error {
	var fe *nginxconf.FieldError
	if errors.As(err, &fe) {
		return errInvalid(fe.Field, "%s", fe.Message)
	}
	return err
}
