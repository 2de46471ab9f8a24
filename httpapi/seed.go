package httpapi

import (
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// The routes of the original Flask service, with its JSON shapes, for TCP
// streams. They share the v1 write path and reconciler; the
// original's bugs are fixed (removestream works, PORT_RANGE is inclusive,
// failures carry a real HTTP status).

// seedResult is the original's answer shape.
type seedResult struct {
	Result string   `json:"result"`
	Errors []string `json:"errors,omitempty"`
	Port   int      `json:"port,omitempty"`
}

func writeSeedError(w http.ResponseWriter, e *Error) {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	writeJSON(w, e.Status, seedResult{Result: "error", Errors: []string{msg}})
}

// seedStatus: {"version": "...", "available_ports": N}, N the number of
// ports of PORT_RANGE that have no TCP stream.
func (s *Server) seedStatus(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"version": s.cfg.Version, "available_ports": len(s.freePorts())})
	return nil
}

// freePorts lists the ports of the range a new TCP stream could take now:
// the write path's own answer, the one POST /v1/streams allocates from.
func (s *Server) freePorts() []int {
	return s.writes.FreePorts(stream.Spec{Protocol: stream.TCP}, 0)
}

// seedGetStreams: [{"listen": 9000, "proxy_pass": "host:port"}] for every
// TCP stream (its first backend).
func (s *Server) seedGetStreams(w http.ResponseWriter, r *http.Request) error {
	specs, _ := s.store.List()
	type entry struct {
		Listen    int    `json:"listen"`
		ProxyPass string `json:"proxy_pass"`
	}
	out := []entry{}
	for _, sp := range specs {
		if sp.Protocol == stream.TCP && len(sp.Backends) > 0 {
			out = append(out, entry{Listen: sp.Listen, ProxyPass: sp.Backends[0]})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// seedCreate: GET /createstream/{port}/{backend} creates or replaces the
// TCP stream on port and answers {"result": "ok", "errors": []} once it
// is applied. With ?dry_run=true it changes nothing and answers what it
// would do: the seed shape plus the dry-run detail of PUT /v1/streams.
func (s *Server) seedCreate(w http.ResponseWriter, r *http.Request) error {
	port, err := parsePort(mux.Vars(r)["port"])
	if err != nil {
		return err
	}
	sp := stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{mux.Vars(r)["backend"]}}
	if isDryRun(r) {
		return s.seedCreateDryRun(w, r, sp)
	}
	out, err := s.write(r, sp, desired.Match{})
	if err != nil {
		return err
	}
	code := http.StatusOK
	if out.accepted {
		code = http.StatusAccepted
	}
	writeJSON(w, code, map[string]any{"result": "ok", "errors": []string{}})
	return nil
}

// seedCreateDryRun validates sp as the write would, and answers what
// writing it would change.
func (s *Server) seedCreateDryRun(w http.ResponseWriter, r *http.Request, sp stream.Spec) error {
	sp, err := s.writes.Check(r.Context(), sp)
	if err != nil {
		return writesError(err, sp.ID().String())
	}
	plan, err := s.planPut(sp)
	if err != nil {
		return err
	}
	writeSeedPlan(w, plan)
	return nil
}

// writeSeedPlan answers a seed dry run: {"result": "ok", "errors": []}
// and the dry-run detail beside it.
func writeSeedPlan(w http.ResponseWriter, plan map[string]any) {
	plan["result"], plan["errors"] = "ok", []string{}
	writeJSON(w, http.StatusOK, plan)
}

// seedRemove: GET /removestream/{port} removes the TCP stream on port;
// with ?dry_run=true it changes nothing and answers what it would do.
func (s *Server) seedRemove(w http.ResponseWriter, r *http.Request) error {
	port, err := parsePort(mux.Vars(r)["port"])
	if err != nil {
		return err
	}
	id := stream.ID{Protocol: stream.TCP, Port: port}
	if isDryRun(r) {
		cur, err := s.writes.PlanDelete(id, desired.Match{})
		if err != nil {
			return writesError(err, id.String())
		}
		plan, err := s.planDelete(cur)
		if err != nil {
			return err
		}
		writeSeedPlan(w, plan)
		return nil
	}
	prev, pending, err := s.writes.Delete(id, desired.Match{})
	if err != nil {
		return writesError(err, id.String())
	}
	noteChange(r, id.String(), &prev, nil)
	if !noWait(r) {
		left, err := s.await(r, pending)
		if err != nil {
			return err
		}
		if len(left) > 0 { // nginx still serves the port: not "ok"
			return &Error{Status: http.StatusServiceUnavailable, Code: CodeNotApplied, Message: left[0].Reason}
		}
	}
	writeJSON(w, http.StatusOK, seedResult{Result: "ok"})
	return nil
}

// seedHas: GET /hasstream/{port} answers {"result": "true"} or "false".
func (s *Server) seedHas(w http.ResponseWriter, r *http.Request) error {
	port, err := parsePort(mux.Vars(r)["port"])
	if err != nil {
		return err
	}
	_, err = s.store.Get(stream.ID{Protocol: stream.TCP, Port: port})
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, seedResult{Result: "true"})
	case errors.Is(err, desired.ErrNotFound):
		writeJSON(w, http.StatusOK, seedResult{Result: "false"})
	default:
		return err
	}
	return nil
}

// seedFreePort: GET /getfreeport answers {"result": "ok", "port": N}, the
// first free port of the range. Nothing is reserved: two clients may get
// the same answer. POST /v1/streams allocates atomically.
func (s *Server) seedFreePort(w http.ResponseWriter, r *http.Request) error {
	free := s.freePorts()
	if len(free) == 0 {
		return &Error{Status: http.StatusConflict, Code: CodeNoFreePort, Message: "no free port in PORT_RANGE"}
	}
	writeJSON(w, http.StatusOK, seedResult{Result: "ok", Port: free[0]})
	return nil
}
