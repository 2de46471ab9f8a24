package httpapi

import (
	"errors"
	"fmt"
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

// seedStream is one stream of /getstreams. A range is listed once: its
// first port in listen (a number, as for every stream), its last in
// listen_end, both as text in range, and its port_mode; a single port
// has none of these, so its entry stays the original's.
type seedStream struct {
	Listen    int    `json:"listen"`
	ProxyPass string `json:"proxy_pass"`
	ListenEnd int    `json:"listen_end,omitempty"`
	Range     string `json:"range,omitempty"`
	PortMode  string `json:"port_mode,omitempty"`
}

// seedGetStreams: [{"listen": 9000, "proxy_pass": "host:port"}] for every
// TCP stream (its first backend); a range adds listen_end, range and
// port_mode (see seedStream).
func (s *Server) seedGetStreams(w http.ResponseWriter, r *http.Request) error {
	specs, _ := s.store.List()
	out := []seedStream{}
	for _, sp := range specs {
		if sp.Protocol != stream.TCP || len(sp.Backends) == 0 {
			continue
		}
		e := seedStream{Listen: sp.Listen, ProxyPass: sp.Backends[0]}
		if sp.IsRange() {
			e.ListenEnd, e.Range, e.PortMode = sp.ListenEnd, sp.Ports(), sp.PortMode
		}
		out = append(out, e)
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
	if err := s.seedNotRange(port, "replaced"); err != nil {
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
	if err := s.seedNotRange(port, "removed"); err != nil {
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

// seedNotRange refuses a seed route that would change one port of a TCP
// range (its first port included: the seed routes know single ports, and
// /removestream/10000 must not close 10000-10099): 409 port_conflict
// naming the range and the route that changes it; what is the verb
// ("removed", "replaced").
func (s *Server) seedNotRange(port int, what string) error {
	cov, ok := s.coveringStream(stream.TCP, port)
	if !ok {
		return nil
	}
	return &Error{Status: http.StatusConflict, Code: CodePortConflict, Field: "port", Message: fmt.Sprintf(
		"port %d is part of stream %s, a port range: it is not %s port by port (use /v1/streams/%s)", port, cov.Ref(), what, cov.Ref())}
}

// seedHas: GET /hasstream/{port} answers {"result": "true"} or "false":
// true for a port inside a range too.
func (s *Server) seedHas(w http.ResponseWriter, r *http.Request) error {
	port, err := parsePort(mux.Vars(r)["port"])
	if err != nil {
		return err
	}
	_, err = s.store.Get(stream.ID{Protocol: stream.TCP, Port: port})
	if _, inRange := s.coveringStream(stream.TCP, port); errors.Is(err, desired.ErrNotFound) && inRange {
		err = nil
	}
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
