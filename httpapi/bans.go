package httpapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"time"

	"github.com/gorilla/mux"

	"github.com/streamconductor/stream-conductor/bans"
	"github.com/streamconductor/stream-conductor/stream"
)

// BanSource is this node's automatic bans (package bans).
type BanSource interface {
	List(id *stream.ID) []bans.Ban
	Stats() (current int, total uint64)
	Lift(id stream.ID, addr netip.Addr) (version uint64, err error)
	LiftAll(id stream.ID) (n int, version uint64)
	WaitApplied(ctx context.Context, id stream.ID, version uint64) error
}

// banView is a ban as GET /v1/bans shows it.
type banView struct {
	Stream           stream.ID `json:"stream"`
	Address          string    `json:"address"`
	Since            time.Time `json:"since"`
	Until            time.Time `json:"until"`
	ExpiresInSeconds int64     `json:"expires_in_seconds"`
	Failures         int       `json:"failures"`
	Reason           string    `json:"reason"`
}

// listBans answers GET /v1/bans: this node's bans in force, of one
// stream with ?stream=tcp/9000 (a range: tcp/10000-10099 or its first
// port).
func (s *Server) listBans(w http.ResponseWriter, r *http.Request) error {
	var filter *stream.ID
	if v := r.URL.Query().Get("stream"); v != "" {
		id, _, err := stream.ParseRef(v) // a range by its ports too: tcp/10000-10099
		if err != nil {
			return errInvalid("stream", "%s", truncate(err.Error()))
		}
		filter = &id
	}
	out := []banView{}
	if s.cfg.Bans != nil {
		now := time.Now()
		for _, b := range s.cfg.Bans.List(filter) {
			out = append(out, banView{Stream: b.Stream, Address: b.Address.String(), Since: b.Since.UTC(), Until: b.Until.UTC(),
				ExpiresInSeconds: int64(math.Ceil(max(0, b.Until.Sub(now).Seconds()))), Failures: b.Failures, Reason: b.Reason})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"node": s.cfg.NodeName, "bans": out})
	return nil
}

// liftBan answers DELETE /v1/bans/{protocol}/{port}/{address}: the ban
// ends, and the answer comes once nginx lets the address in again.
func (s *Server) liftBan(w http.ResponseWriter, r *http.Request) error {
	id, _, err := pathRef(r)
	if err != nil {
		return err
	}
	text := mux.Vars(r)["address"]
	addr, err := netip.ParseAddr(text)
	if err != nil || addr.Zone() != "" {
		return errInvalid("address", "%q is not an IPv4 or IPv6 address", truncate(text))
	}
	addr = addr.Unmap()
	if s.cfg.Bans == nil {
		return errNotFound("%s is not banned from %s", addr, id)
	}
	version, err := s.cfg.Bans.Lift(id, addr)
	if errors.Is(err, bans.ErrNotFound) {
		return errNotFound("%s is not banned from %s", addr, id)
	}
	if err != nil {
		return err
	}
	noteChange(r, id.String(), nil, nil)
	return s.awaitLift(w, r, id, version, []string{addr.String()})
}

// liftBans answers DELETE /v1/bans/{protocol}/{port}: every ban of the
// stream ends.
func (s *Server) liftBans(w http.ResponseWriter, r *http.Request) error {
	id, _, err := pathRef(r)
	if err != nil {
		return err
	}
	var lifted []string
	if s.cfg.Bans != nil {
		for _, b := range s.cfg.Bans.List(&id) {
			lifted = append(lifted, b.Address.String())
		}
	}
	if len(lifted) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"stream": id, "lifted": []string{}, "applied": true})
		return nil
	}
	_, version := s.cfg.Bans.LiftAll(id)
	noteChange(r, id.String(), nil, nil)
	return s.awaitLift(w, r, id, version, lifted)
}

// awaitLift answers once nginx applied the bans of version for id: 200;
// 202 with ?wait=false; 503 when it did not within APPLY_TIMEOUT (the
// lift stands and is applied when nginx allows).
func (s *Server) awaitLift(w http.ResponseWriter, r *http.Request, id stream.ID, version uint64, lifted []string) error {
	out := map[string]any{"stream": id, "lifted": lifted, "applied": false}
	if noWait(r) {
		writeJSON(w, http.StatusAccepted, out)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ApplyTimeout)
	defer cancel()
	if err := s.cfg.Bans.WaitApplied(ctx, id, version); err != nil {
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeApplyTimeout, Extra: out,
			Message: "the ban is lifted but nginx did not apply that within " + s.cfg.ApplyTimeout.String() + "; it will when nginx allows"}
	}
	out["applied"] = true
	writeJSON(w, http.StatusOK, out)
	return nil
}
