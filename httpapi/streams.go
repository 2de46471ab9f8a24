package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/streamconductor/stream-conductor/health"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/traffic"
)

// streamView is a stream as the API shows it: its id, its spec and its
// status.
type streamView struct {
	ID string `json:"id"`
	stream.Spec
	Status  stream.Status    `json:"status"`
	Traffic *traffic.Stats   `json:"traffic,omitempty"`
	Health  []health.Backend `json:"health,omitempty"`
}

func (s *Server) view(sp stream.Spec) streamView {
	if sp.Backends == nil {
		sp.Backends = []string{}
	}
	v := streamView{ID: sp.ID(), Spec: sp, Status: s.applier.Status(sp.ID(), sp.Revision)}
	if s.cfg.Traffic != nil {
		v.Traffic = s.cfg.Traffic.Get(v.ID)
	}
	if s.cfg.Health != nil {
		v.Health = s.cfg.Health.Of(sp)
	}
	return v
}

func (s *Server) rules() nginxconf.Rules {
	r := nginxconf.Rules{PortMin: s.cfg.PortMin, PortMax: s.cfg.PortMax}
	if s.cfg.APIPort != 0 {
		r.Reserved = []int{s.cfg.APIPort}
	}
	return r
}

func etag(rev uint64) string { return `"` + strconv.FormatUint(rev, 10) + `"` }

// pathStream reads {protocol} and {port} from the URL.
func pathStream(r *http.Request) (stream.Protocol, int, error) {
	v := mux.Vars(r)
	p := stream.Protocol(v["protocol"])
	if p != stream.TCP && p != stream.UDP {
		return "", 0, errInvalid("protocol", "must be tcp or udp, not %q", truncate(v["protocol"]))
	}
	port, err := parsePort(v["port"])
	if err != nil {
		return "", 0, err
	}
	return p, port, nil
}

// parsePort accepts a decimal port 1-65535 without sign, spaces or
// leading zeros.
func parsePort(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || strconv.Itoa(n) != v || n < 1 || n > 65535 {
		return 0, errInvalid("listen", "port must be a number 1-65535, not %q", truncate(v))
	}
	return n, nil
}

// precondition reads If-Match and If-None-Match.
func precondition(r *http.Request) (store.Match, error) {
	var m store.Match
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

func storeError(err error, id string) error {
	switch {
	case errors.Is(err, store.ErrRevisionMismatch):
		return &Error{Status: http.StatusPreconditionFailed, Code: CodeRevision, Message: "stream " + id + " has changed since that revision; GET it again"}
	case errors.Is(err, store.ErrExists):
		return &Error{Status: http.StatusPreconditionFailed, Code: CodeRevision, Message: "stream " + id + " already exists"}
	case errors.Is(err, store.ErrNotFound):
		return errNotFound("no stream %s", id)
	case errors.Is(err, store.ErrNoFreePort):
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

// listCache is an encoded list answer and what it reflects.
type listCache struct {
	key  [3]uint64 // store revision, status version, second (traffic, health)
	etag string
	body []byte
}

// listStreams answers from a cache of the encoded list, rebuilt only when
// the store or a status changed: listing is what dashboards and scripts do
// all day. The answer carries an ETag; If-None-Match gets a 304.
func (s *Server) listStreams(w http.ResponseWriter, r *http.Request) error {
	ver := s.applier.StatusVersion()
	specs, rev := s.store.List()
	key := [3]uint64{rev, ver, 0}
	if s.cfg.Traffic != nil || s.cfg.Health != nil {
		key[2] = uint64(time.Now().Unix()) // traffic and health at most a second old
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
		c = &listCache{key: key, etag: fmt.Sprintf(`"%d-%d-%d"`, key[0], key[1], key[2]), body: append(body, '\n')}
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

func (s *Server) getStream(w http.ResponseWriter, r *http.Request) error {
	p, port, err := pathStream(r)
	if err != nil {
		return err
	}
	sp, err := s.store.Get(stream.MakeID(p, port))
	if err != nil {
		return storeError(err, stream.MakeID(p, port))
	}
	w.Header().Set("ETag", etag(sp.Revision))
	writeJSON(w, http.StatusOK, s.view(sp))
	return nil
}

func (s *Server) putStream(w http.ResponseWriter, r *http.Request) error {
	p, port, err := pathStream(r)
	if err != nil {
		return err
	}
	var req specRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	sp, err := req.toSpec(p, port)
	if err != nil {
		return err
	}
	m, err := precondition(r)
	if err != nil {
		return err
	}
	if isDryRun(r) {
		if sp, err = nginxconf.Validate(sp, s.rules()); err != nil {
			return validationError(err)
		}
		if err := s.checkBackends(r.Context(), sp.Backends); err != nil {
			return err
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
		w.Header().Set("Location", "/v1/streams/"+out.stored.ID())
	}
	if out.accepted {
		code = http.StatusAccepted
	}
	writeJSON(w, code, s.view(out.stored))
}

// write validates sp, stores it if it differs from what is stored and
// waits for it to be applied. Shared by PUT and the seed route
// createstream.
func (s *Server) write(r *http.Request, sp stream.Spec, m store.Match) (outcome, error) {
	sp, err := nginxconf.Validate(sp, s.rules())
	if err != nil {
		return outcome{}, validationError(err)
	}
	if err := s.checkBackends(r.Context(), sp.Backends); err != nil {
		return outcome{}, err
	}
	id := sp.ID()
	cur, err := s.store.Get(id)
	exists := err == nil
	if exists && cur.SameDesired(sp) && !m.Absent && (m.Revision == 0 || m.Revision == cur.Revision) {
		// Nothing to change: answer with the stream as it stands.
		return s.settle(r, cur, nil, false, false)
	}
	if !exists || cur.Bind != sp.Bind {
		if err := s.applier.PortBusy(sp); err != nil {
			return outcome{}, &Error{Status: http.StatusConflict, Code: CodePortInUse, Field: "listen",
				Message: fmt.Sprintf("port %d is held by another process: %v", sp.Listen, err)}
		}
	}
	stored, prev, err := s.store.Put(sp, m)
	if err != nil {
		if (m.Revision != 0 || m.Present) && errors.Is(err, store.ErrNotFound) {
			return outcome{}, &Error{Status: http.StatusPreconditionFailed, Code: CodeRevision, Message: "stream " + id + " does not exist"}
		}
		return outcome{}, storeError(err, id)
	}
	noteChange(r, id, prev, &stored)
	return s.settle(r, stored, prev, prev == nil, true)
}

func (s *Server) createStream(w http.ResponseWriter, r *http.Request) error {
	var req specRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	sp, err := req.toSpec("", 0)
	if err != nil {
		return err
	}
	if s.cfg.PortMax == 0 {
		return errInvalid("listen", "PORT_RANGE is not set, so there is no port to allocate")
	}
	// Validate everything but the port, which Allocate chooses.
	sp.Listen = s.cfg.PortMin
	sp, err = nginxconf.Validate(sp, nginxconf.Rules{PortMin: s.cfg.PortMin, PortMax: s.cfg.PortMax})
	if err != nil {
		return validationError(err)
	}
	if err := s.checkBackends(r.Context(), sp.Backends); err != nil {
		return err
	}
	if isDryRun(r) {
		// The port the allocation would choose now (nothing is reserved).
		for port := s.cfg.PortMin; port <= s.cfg.PortMax; port++ {
			sp.Listen = port
			if _, err := s.store.Get(sp.ID()); err == nil || port == s.cfg.APIPort || s.applier.PortBusy(sp) != nil {
				continue
			}
			return s.dryRun(w, sp)
		}
		return storeError(store.ErrNoFreePort, "")
	}
	stored, err := s.store.Allocate(sp, s.cfg.PortMin, s.cfg.PortMax, func(port int) bool {
		probe := sp
		probe.Listen = port
		return port == s.cfg.APIPort || s.applier.PortBusy(probe) != nil
	})
	if err != nil {
		return storeError(err, "")
	}
	noteChange(r, stored.ID(), nil, &stored)
	out, err := s.settle(r, stored, nil, true, true)
	if err != nil {
		return err
	}
	s.writeOutcome(w, out)
	return nil
}

func (s *Server) deleteStream(w http.ResponseWriter, r *http.Request) error {
	p, port, err := pathStream(r)
	if err != nil {
		return err
	}
	m, err := precondition(r)
	if err != nil {
		return err
	}
	id := stream.MakeID(p, port)
	if isDryRun(r) {
		cur, err := s.store.Get(id)
		if err != nil {
			return storeError(err, id)
		}
		if m.Revision != 0 && m.Revision != cur.Revision {
			return storeError(store.ErrRevisionMismatch, id)
		}
		name, _, current, err := s.applier.Preview(cur)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "change": "delete", "file": name, "config": "",
			"diff": lineDiff(string(current), ""), "stream": s.view(cur)})
		return nil
	}
	prev, rev, err := s.store.Delete(id, m)
	if err != nil {
		return storeError(err, id)
	}
	noteChange(r, id, &prev, nil)
	if err := s.waitApplied(r, rev); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// waitApplied waits for store revision rev to be applied, unless the
// client asked not to (?wait=false).
func (s *Server) waitApplied(r *http.Request, rev uint64) error {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ApplyTimeout)
	defer cancel()
	if err := s.applier.WaitApplied(ctx, rev); err != nil {
		h := s.applier.Health()
		msg := fmt.Sprintf("the change is stored but was not applied within %v", s.cfg.ApplyTimeout)
		if h.LastError != "" {
			return &Error{Status: http.StatusServiceUnavailable, Code: CodeNginxUnavailable, Message: msg + "; nginx: " + h.LastError}
		}
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeApplyTimeout, Message: msg + "; it will be applied when nginx allows"}
	}
	return nil
}

func noWait(r *http.Request) bool {
	v := r.URL.Query().Get("wait")
	return v == "false" || v == "0"
}

// settle waits until stored (which replaced prev, if any) is applied,
// unless the client asked not to wait (?wait=false). A stream nginx
// rejected is rolled back in the store when this request wrote it (removed
// if it was new, its previous spec restored otherwise) and answered with
// 422.
func (s *Server) settle(r *http.Request, stored stream.Spec, prev *stream.Spec, created, wrote bool) (outcome, error) {
	out := outcome{stored: stored, created: created}
	if noWait(r) {
		out.accepted = true
		return out, nil
	}
	if err := s.waitApplied(r, stored.Revision); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Extra = map[string]any{"stream": s.view(stored)}
		}
		return out, err
	}
	st := s.applier.Status(stored.ID(), stored.Revision)
	if st.State == stream.Failed {
		if wrote {
			s.rollback(stored, prev)
			noteChange(r, stored.ID(), prev, prev) // undone
		}
		return out, &Error{Status: http.StatusUnprocessableEntity, Code: CodeNginxRejected, Message: st.Error}
	}
	return out, nil
}

// rollback undoes a write nginx rejected, unless someone changed the
// stream since.
func (s *Server) rollback(stored stream.Spec, prev *stream.Spec) {
	var err error
	if prev == nil {
		_, _, err = s.store.Delete(stored.ID(), store.Match{Revision: stored.Revision})
	} else {
		_, _, err = s.store.Put(*prev, store.Match{Revision: stored.Revision})
	}
	if err != nil {
		s.log.Warn().Err(err).Str("stream", stored.ID()).Msg("could not roll back a rejected write")
		return
	}
	s.log.Info().Str("stream", stored.ID()).Bool("restored_previous", prev != nil).Msg("rolled back a write nginx rejected")
}

func truncate(v string) string {
	if len(v) > 80 {
		return v[:80] + "..."
	}
	return v
}
