package httpapi

import (
	"bytes"
	"errors"
	"net/http"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/writes"
)

// renewRequest is the body of POST /v1/streams/{protocol}/{port}/renew:
// a lifetime from now, or a deadline; no body (or {}) renews by the
// stream's own ttl.
type renewRequest struct {
	TTL       string `json:"ttl,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty"`
}

// renewStream gives a stream a new deadline (or a first one), through
// the write path like a PUT: If-Match holds, the answer is the stream
// once applied, ?dry_run=true changes nothing.
func (s *Server) renewStream(w http.ResponseWriter, r *http.Request) error {
	id, last, err := pathRef(r)
	if err != nil {
		return err
	}
	body, err := readJSONBody(w, r, MaxBodyBytes)
	if err != nil {
		return err
	}
	var req renewRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeBody(body, &req); err != nil {
			return err
		}
	}
	m, err := precondition(r)
	if err != nil {
		return err
	}
	if m.Absent {
		return errInvalid("If-None-Match", "a renew needs the stream to exist")
	}
	cur, err := s.lookup(id, last)
	if err != nil {
		return err
	}
	at, err := parseDeadline(req.ExpiresAt)
	if err != nil {
		return err
	}
	ren := writes.Renewal{TTL: req.TTL, ExpiresAt: at}
	if isDryRun(r) {
		sp, err := s.writes.PlanRenew(r.Context(), cur.ID(), ren, m)
		if err != nil {
			return writesError(err, cur.ID().String())
		}
		return s.dryRun(w, sp)
	}
	res, err := s.writes.Renew(r.Context(), cur.ID(), ren, m, requestID(r))
	if err != nil {
		if m.Revision != 0 && errors.Is(err, desired.ErrNotFound) {
			return &Error{Status: http.StatusPreconditionFailed, Code: CodeRevision, Message: "stream " + cur.ID().String() + " does not exist"}
		}
		return writesError(err, cur.ID().String())
	}
	if res.Changed {
		noteChange(r, res.Stored.ID().String(), res.Prev, &res.Stored)
	}
	out, err := s.settle(r, res)
	if err != nil {
		return err
	}
	s.writeOutcome(w, out)
	return nil
}
