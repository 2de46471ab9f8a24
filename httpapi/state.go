package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
)

// A shared desired state (STATE_STORE=etcd) says how current the node's
// copy is, and takes an operator's confirmation of a state the node holds.
// The bbolt store does neither: it is always current, never held.

// Conditioned is a store that says how current the node's copy is.
type Conditioned interface {
	Condition() desired.Condition
}

// Confirmer is a store that takes an operator's confirmation.
type Confirmer interface {
	Confirm(ctx context.Context, by string) (desired.Confirmation, error)
}

// StaleHeader marks the answer of a GET served from the node's local copy
// (etcd does not answer, or the copy is held): its value says why and
// since when ("etcd unreachable: <error>; since <RFC 3339 time>").
const StaleHeader = "X-State-Stale"

// condition is the store's condition (zero: current).
func (s *Server) condition() desired.Condition {
	if c, ok := s.store.(Conditioned); ok {
		return c.Condition()
	}
	return desired.Condition{}
}

// markStale sets StaleHeader when reads come from the local copy.
func (s *Server) markStale(w http.ResponseWriter) {
	if st := s.condition().Stale; st != nil {
		w.Header().Set(StaleHeader, st.Reason+"; since "+st.Since.UTC().Format(time.RFC3339))
	}
}

// confirmState records the operator's word that the fleet's state in etcd
// is to be applied as it is: every node that holds its copy applies it.
func (s *Server) confirmState(w http.ResponseWriter, r *http.Request) error {
	c, ok := s.store.(Confirmer)
	if !ok {
		return errNotFound("nothing to confirm: the desired state is this node's own (STATE_STORE=bbolt)")
	}
	alarm := s.condition().Alarm
	conf, err := c.Confirm(r.Context(), confirmedBy(r))
	if err != nil {
		return err
	}
	noteChange(r, "state confirmed", nil, nil)
	writeJSON(w, http.StatusOK, map[string]any{"confirmed": conf, "alarm_cleared": alarm})
	return nil
}

// confirmedBy names who confirmed: the token's id and the address the
// request came from.
func confirmedBy(r *http.Request) string {
	by := r.RemoteAddr
	if c, ok := r.Context().Value(changeKey{}).(*change); ok && c.token != "" {
		by = "token " + c.token + " from " + by
	}
	return by
}
