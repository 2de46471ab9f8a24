package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/fleet"
	"github.com/streamconductor/stream-conductor/health"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/traffic"
	"github.com/streamconductor/stream-conductor/writes"
)

// streamView is a stream as the API shows it: its id, its spec and its
// status.
type streamView struct {
	ID stream.ID `json:"id"`
	stream.Shown
	Status  fleet.View       `json:"status"`
	Traffic *traffic.Stats   `json:"traffic,omitempty"`
	Health  []health.Backend `json:"health,omitempty"`
}

func (s *Server) view(sp stream.Spec) streamView {
	v := streamView{ID: sp.ID(), Shown: sp.Shown()}
	if s.cfg.Fleet != nil {
		v.Status = s.cfg.Fleet.Of(sp)
	} else {
		v.Status.Status = s.applier.Status(sp.ID(), sp.Revision)
	}
	if s.cfg.Traffic != nil {
		v.Traffic = s.cfg.Traffic.Get(v.ID)
	}
	if s.cfg.Health != nil {
		v.Health = s.cfg.Health.Of(sp)
	}
	return v
}

func etag(rev uint64) string { return `"` + strconv.FormatUint(rev, 10) + `"` }

// parsePort accepts a decimal port 1-65535 without sign, spaces or
// leading zeros.
func parsePort(v string) (int, error) {
	n, err := stream.ParsePort(v)
	if err != nil {
		return 0, errInvalid("listen", "port must be a number 1-65535, not %q", truncate(v))
	}
	return n, nil
}

// precondition reads If-Match and If-None-Match.
func precondition(r *http.Request) (desired.Match, error) {
	var m desired.Match
	if v := strings.TrimSpace(r.Header.Get("If-None-Match")); v != "" {
		if v != "*" {
			return m, errInvalid("If-None-Match", "only * is supported on writes")
		}
		m.Absent = true
	}
	if v := strings.TrimSpace(r.Header.Get("If-Match")); v != "" {
		if v == "*" {
			m.Present = true
			return m, nil
		}
		rev, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(v, "W/"), `"`), 10, 64)
		if err != nil || rev == 0 {
			return m, errInvalid("If-Match", "want an ETag such as \"12\", not %q", truncate(v))
		}
		m.Revision = rev
	}
	return m, nil
}

// listCache is an encoded list answer and what it reflects.
type listCache struct {
	key  [4]uint64 // store revision, status version, second (traffic, health), fleet generation
	etag string
	body []byte
}

// listStreams answers from a cache of the encoded list, rebuilt only when
// the store or a status changed: listing is what dashboards and scripts do
// all day. The answer carries an ETag; If-None-Match gets a 304.
func (s *Server) listStreams(w http.ResponseWriter, r *http.Request) error {
	ver := s.applier.StatusVersion()
	specs, rev := s.store.List()
	key := [4]uint64{rev, ver, 0, 0}
	if s.cfg.Traffic != nil || s.cfg.Health != nil || anyExpires(specs) {
		key[2] = uint64(time.Now().Unix()) // traffic, health and expires_in_seconds at most a second old
	}
	if s.cfg.Fleet != nil {
		key[3] = s.cfg.Fleet.Generation()
	}
	c := s.list.Load()
	if c == nil || c.key != key {
		views := make([]streamView, len(specs))
		for i, sp := range specs {
			views[i] = s.view(sp)
		}
		body, err := json.MarshalIndent(map[string]any{"streams": views, "revision": rev}, "", "  ")
		if err != nil {
			return err
		}
		c = &listCache{key: key, etag: fmt.Sprintf(`"%d-%d-%d-%d"`, key[0], key[1], key[2], key[3]), body: append(body, '\n')}
		s.list.Store(c)
	}
	w.Header().Set("ETag", c.etag)
	if r.Header.Get("If-None-Match") == c.etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Length", strconv.Itoa(len(c.body)))
	w.Write(c.body)
	return nil
}

// anyExpires says whether one of specs has a deadline (its
// expires_in_seconds changes every second).
func anyExpires(specs []stream.Spec) bool {
	for _, sp := range specs {
		if sp.Expires() {
			return true
		}
	}
	return false
}

func (s *Server) getStream(w http.ResponseWriter, r *http.Request) error {
	id, last, err := pathRef(r)
	if err != nil {
		return err
	}
	sp, err := s.lookup(id, last)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(sp.Revision))
	writeJSON(w, http.StatusOK, s.view(sp))
	return nil
}

func (s *Server) putStream(w http.ResponseWriter, r *http.Request) error {
	id, last, err := pathRef(r)
	if err != nil {
		return err
	}
	var req specRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	sp, err := req.toSpec(id.Protocol, id.Port, last)
	if err != nil {
		return err
	}
	m, err := precondition(r)
	if err != nil {
		return err
	}
	if isDryRun(r) {
		// The preconditions hold for a dry run too: it answers what the
		// write would (412 for If-None-Match: * on a stream that exists).
		var cur *stream.Spec
		if c, err := s.store.Get(sp.ID()); err == nil {
			cur = &c
		}
		if err := m.Check(cur); err != nil {
			return storeError(err, sp.ID().String())
		}
		if sp, err = s.writes.Check(r.Context(), sp); err != nil {
			return writesError(err, sp.ID().String())
		}
		return s.dryRun(w, sp)
	}
	out, err := s.write(r, sp, m)
	if err != nil {
		return err
	}
	s.writeOutcome(w, out)
	return nil
}

func (s *Server) createStream(w http.ResponseWriter, r *http.Request) error {
	var req specRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	sp, err := req.toSpec("", 0, 0)
	if err != nil {
		return err
	}
	n := 1
	if req.Ports != nil {
		n = *req.Ports
		if n < 1 || n > stream.MaxRangePorts {
			return errInvalid("ports", "want 1 to %d ports, not %d", stream.MaxRangePorts, n)
		}
	}
	if isDryRun(r) {
		if sp, err = s.planCreate(r, sp, n); err != nil {
			return writesError(err, "")
		}
		return s.dryRun(w, sp)
	}
	res, err := s.create(r, sp, n)
	if err != nil {
		return writesError(err, "")
	}
	noteChange(r, res.Stored.ID().String(), nil, &res.Stored)
	out, err := s.settle(r, res)
	if err != nil {
		return err
	}
	s.writeOutcome(w, out)
	return nil
}

// create stores sp on the first free port, or on the first free run of
// n ports when n > 1 (a range).
func (s *Server) create(r *http.Request, sp stream.Spec, n int) (writes.Result, error) {
	if n > 1 {
		return s.writes.CreateRange(r.Context(), sp, n, requestID(r))
	}
	return s.writes.Create(r.Context(), sp, requestID(r))
}

// planCreate is create changing nothing: sp on the port or run it would
// take now.
func (s *Server) planCreate(r *http.Request, sp stream.Spec, n int) (stream.Spec, error) {
	if n > 1 {
		return s.writes.PlanCreateRange(r.Context(), sp, n)
	}
	return s.writes.PlanCreate(r.Context(), sp)
}

func (s *Server) deleteStream(w http.ResponseWriter, r *http.Request) error {
	id, last, err := pathRef(r)
	if err != nil {
		return err
	}
	if _, err := s.lookup(id, last); err != nil {
		return err
	}
	m, err := precondition(r)
	if err != nil {
		return err
	}
	if isDryRun(r) {
		cur, err := s.writes.PlanDelete(id, m)
		if err != nil {
			return writesError(err, id.String())
		}
		plan, err := s.planDelete(cur)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, plan)
		return nil
	}
	prev, pending, err := s.writes.Delete(id, m)
	if err != nil {
		return writesError(err, id.String())
	}
	noteChange(r, id.String(), &prev, nil)
	left, err := s.await(r, pending)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		// Stored, but nginx still serves the port: no 204, which would
		// say it is closed.
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeNotApplied, Message: left[0].Reason}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func truncate(v string) string {
	if len(v) > 80 {
		return v[:80] + "..."
	}
	return v
}
