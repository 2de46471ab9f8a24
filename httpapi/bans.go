package httpapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"slices"
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
		id, last, err := stream.ParseRef(v) // a range by its ports too: tcp/10000-10099
		if err != nil {
			return errInvalid("stream", "%s", truncate(err.Error()))
		}
		if _, err := s.lookup(id, last); err != nil {
			return err // no such stream, or a port inside a range (named)
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
// ends, and the answer comes once nginx lets the address in again. A dry
// run says what would be lifted and changes nothing.
func (s *Server) liftBan(w http.ResponseWriter, r *http.Request) error {
	id, err := s.banStream(r)
	if err != nil {
		return err
	}
	text := mux.Vars(r)["address"]
	addr, err := netip.ParseAddr(text)
	if err != nil || addr.Zone() != "" {
		return errInvalid("address", "%q is not an IPv4 or IPv6 address", truncate(text))
	}
	addr = addr.Unmap()
	if s.cfg.Bans == nil || !slices.ContainsFunc(s.cfg.Bans.List(&id), func(b bans.Ban) bool { return b.Address == addr }) {
		return errNotFound("%s is not banned from %s", addr, id)
	}
	if isDryRun(r) {
		writeJSON(w, http.StatusOK, map[string]any{"stream": id, "lifted": []string{addr.String()}, "applied": false, "dry_run": true})
		return nil
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
// stream ends (a dry run: says which would).
func (s *Server) liftBans(w http.ResponseWriter, r *http.Request) error {
	id, err := s.banStream(r)
	if err != nil {
		return err
	}
	var lifted []string
	if s.cfg.Bans != nil {
		for _, b := range s.cfg.Bans.List(&id) {
			lifted = append(lifted, b.Address.String())
		}
	}
	if lifted == nil {
		lifted = []string{}
	}
	if isDryRun(r) {
		writeJSON(w, http.StatusOK, map[string]any{"stream": id, "lifted": lifted, "applied": false, "dry_run": true})
		return nil
	}
	if len(lifted) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"stream": id, "lifted": lifted, "applied": true})
		return nil
	}
	n, version := s.cfg.Bans.LiftAll(id)
	if n == 0 { // they ended by themselves since they were listed
		writeJSON(w, http.StatusOK, map[string]any{"stream": id, "lifted": []string{}, "applied": true})
		return nil
	}
	noteChange(r, id.String(), nil, nil)
	return s.awaitLift(w, r, id, version, lifted)
}

// banStream returns the stream a ban route names: 404 when there is
// none, or when the port is inside a range (the error names the range), as
// for the stream's own routes.
func (s *Server) banStream(r *http.Request) (stream.ID, error) {
	id, last, err := pathRef(r)
	if err != nil {
		return stream.ID{}, err
	}
	if _, err := s.lookup(id, last); err != nil {
		return stream.ID{}, err
	}
	return id, nil
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
