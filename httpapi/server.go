// Package httpapi serves stream-conductor's HTTP API: the v1 JSON API, the
// routes of the original Flask service, health and status. It validates
// every input's shape, hands every change to the write path (package
// writes) and turns its answers into HTTP; it never writes files or runs
// nginx.
package httpapi

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/fleet"
	"github.com/streamconductor/stream-conductor/health"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/traffic"
	"github.com/streamconductor/stream-conductor/writes"
)

// Store is what the API reads of the desired state (desired.State): the
// streams, the audit log, backups and whether it takes writes. Every
// change of a stream goes through the write path.
type Store interface {
	Get(id stream.ID) (stream.Spec, error)
	List() ([]stream.Spec, uint64)
	AppendAudit(rec desired.AuditRecord) error
	Audit(before uint64, limit int) ([]desired.AuditRecord, error)
	Backup(w io.Writer, begin func(desired.BackupInfo)) error
	Check() error
}

// Applier is the reconciler as the API reads it.
type Applier interface {
	Status(id stream.ID, rev uint64) stream.Status
	NodeStatus() stream.NodeStatus
	// StatusVersion changes whenever a stream's status may have.
	StatusVersion() uint64
	// Preview renders a spec and reads its file, changing nothing.
	Preview(s stream.Spec) (name string, body, current []byte, err error)
}

// FleetStatus gives a stream's status across the nodes that serve it
// (package fleet).
type FleetStatus interface {
	// Of is sp's status, on each node in a fleet.
	Of(sp stream.Spec) fleet.View
	// Lagging names the nodes that serve one of specs and have not
	// applied revision rev.
	Lagging(rev uint64, specs []stream.Spec) []string
	// Generation changes whenever another node published a change.
	Generation() uint64
}

// TrafficSource gives what nginx carried per stream.
type TrafficSource interface {
	Get(id stream.ID) *traffic.Stats
}

// HealthSource gives the probed health of a stream's backends.
type HealthSource interface {
	Of(s stream.Spec) []health.Backend
}

// Config is what the API needs to know about the node.
type Config struct {
	// PortMin and PortMax are PORT_RANGE, as /v1/status shows it.
	PortMin, PortMax int
	// ApplyTimeout bounds how long a request waits for its write to be
	// applied.
	ApplyTimeout time.Duration
	Version      string
	NginxMode    string
	// Tokens, when they hold a write token, guard every route but /healthz.
	Tokens *TokenSource
	// LoopbackOnly: the API listens on loopback, so requests must name a
	// loopback host (DNS rebinding defence).
	LoopbackOnly bool
	// Traffic, when set, adds each stream's traffic to its answers.
	Traffic TrafficSource
	// Health, when set, adds each backend's probed health.
	Health HealthSource
	// Metrics, when set, is served at /metrics (authorised like a read).
	Metrics http.Handler
	// Fleet, when set, gives each stream's status (in a fleet, on each
	// node that serves it); unset, the applier's status is shown.
	Fleet FleetStatus
	// Nodes, when set, lists the fleet's nodes at GET /v1/nodes; unset,
	// the node lists itself as NodeName at APIAddress.
	Nodes      NodeLister
	NodeName   string
	APIAddress string
	// Events, when set, is served at GET /v1/events.
	Events *events.Bus
	// EventsKeepAlive is the period of the keep-alive comments on
	// /v1/events (default 15s).
	EventsKeepAlive time.Duration
	// EventsWriteTimeout bounds each write to an events client, so that
	// one that stopped reading is let go (default 10s).
	EventsWriteTimeout time.Duration
	// Bans, when set, are this node's automatic bans (GET and DELETE
	// /v1/bans); unset (external mode), there are none.
	Bans BanSource
	// OnRequest, when set, is told the route, status and duration of
	// every request (metrics).
	OnRequest func(route string, code int, d time.Duration)
	Log       zerolog.Logger
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	store   Store
	applier Applier
	writes  *writes.Path
	log     zerolog.Logger
	router  *mux.Router
	reqID   atomic.Uint64
	// list caches the encoded GET /v1/streams answer.
	list atomic.Pointer[listCache]
	// closing ends the event streams when the server shuts down.
	closing   chan struct{}
	closeOnce sync.Once
}

// CloseEvents ends every GET /v1/events stream, so that a graceful
// shutdown need not wait for clients that never leave (register it with
// http.Server.RegisterOnShutdown).
func (s *Server) CloseEvents() { s.closeOnce.Do(func() { close(s.closing) }) }

// New returns the API's handler: it reads st and ap, and changes the
// desired state only through wp.
func New(cfg Config, st Store, ap Applier, wp *writes.Path) *Server {
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.Tokens == nil {
		cfg.Tokens = &TokenSource{}
	}
	s := &Server{cfg: cfg, store: st, applier: ap, writes: wp, log: cfg.Log.With().Str("component", "httpapi").Logger(),
		closing: make(chan struct{})}
	r := mux.NewRouter().SkipClean(true) // no redirects: odd paths get a JSON 404
	r.NotFoundHandler = s.handle("not_found", Read, func(w http.ResponseWriter, r *http.Request) error {
		return errNotFound("no route for %s %s", r.Method, r.URL.Path)
	})
	r.MethodNotAllowedHandler = s.handle("method_not_allowed", Read, func(w http.ResponseWriter, r *http.Request) error {
		return &Error{Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed, Message: r.Method + " is not allowed on " + r.URL.Path}
	})
	route := func(method, path string, need Access, h handlerFunc) {
		r.Handle(path, s.handle(path, need, h)).Methods(method)
	}
	seedRoute := func(path string, need Access, h handlerFunc) {
		r.Handle(path, s.handleWith(path, need, h, writeSeedError)).Methods(http.MethodGet)
	}
	route(http.MethodGet, "/healthz", Open, s.healthz)
	route(http.MethodGet, "/openapi.json", Open, s.openapi)
	route(http.MethodGet, "/readyz", Read, s.readyz)
	route(http.MethodGet, "/v1/status", Read, s.status)
	route(http.MethodGet, "/v1/streams", Read, s.listStreams)
	route(http.MethodPost, "/v1/streams", Write, s.createStream)
	route(http.MethodGet, "/v1/streams/{protocol}/{port}", Read, s.getStream)
	route(http.MethodPut, "/v1/streams/{protocol}/{port}", Write, s.putStream)
	route(http.MethodDelete, "/v1/streams/{protocol}/{port}", Write, s.deleteStream)
	route(http.MethodPost, "/v1/streams/{protocol}/{port}/renew", Write, s.renewStream)
	route(http.MethodGet, "/v1/backup", Read, s.backup)
	route(http.MethodGet, "/v1/export", Read, s.export)
	route(http.MethodPost, "/v1/import", Write, s.importStreams)
	route(http.MethodGet, "/v1/audit", Read, s.audit)
	route(http.MethodGet, "/v1/nodes", Read, s.listNodes)
	route(http.MethodGet, "/v1/events", Read, s.streamEvents)
	route(http.MethodPost, "/v1/state/confirm", Write, s.confirmState)
	route(http.MethodGet, "/v1/whoami", Read, s.whoami)
	route(http.MethodGet, "/v1/bans", Read, s.listBans)
	route(http.MethodDelete, "/v1/bans/{protocol}/{port}", Write, s.liftBans)
	route(http.MethodDelete, "/v1/bans/{protocol}/{port}/{address}", Write, s.liftBan)
	s.mountUI(r)
	if cfg.Metrics != nil {
		route(http.MethodGet, "/metrics", Read, func(w http.ResponseWriter, r *http.Request) error {
			cfg.Metrics.ServeHTTP(w, r)
			return nil
		})
	}
	// The routes of the original service; the ones that change state are
	// authorised like writes, though they are GETs.
	seedRoute("/status", Read, s.seedStatus)
	seedRoute("/getstreams", Read, s.seedGetStreams)
	seedRoute("/createstream/{port}/{backend}", Write, s.seedCreate)
	seedRoute("/removestream/{port}", Write, s.seedRemove)
	seedRoute("/hasstream/{port}", Read, s.seedHas)
	seedRoute("/getfreeport", Read, s.seedFreePort)
	s.router = r
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// handlerFunc is a handler that reports failure by returning an error.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle adapts h: the caller is authorised for need, errors become JSON
// bodies, panics become a 500 that shows no internals, every request is
// logged once with an id, and every write is recorded in the audit log.
func (s *Server) handle(route string, need Access, h handlerFunc) http.Handler {
	return s.handleWith(route, need, h, writeError)
}

// handleWith is handle with errors written by writeErr.
func (s *Server) handleWith(route string, need Access, h handlerFunc, writeErr func(http.ResponseWriter, *Error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := strconv.FormatUint(s.reqID.Add(1), 10)
		rw := &statusWriter{ResponseWriter: w}
		rw.Header().Set("X-Request-Id", id)
		if need != Open && r.Method == http.MethodGet {
			s.markStale(rw)
		}
		rec := &change{requestID: id}
		r = r.WithContext(context.WithValue(r.Context(), changeKey{}, rec))
		token, err := s.admit(r, need)
		rec.token = token
		if err == nil {
			err = s.call(h, rw, r, id)
		}
		ev := s.log.Debug()
		result := "ok"
		if err != nil {
			e := asAPIError(err)
			if e.Status == http.StatusUnauthorized {
				rw.Header().Set("WWW-Authenticate", `Bearer realm="stream-conductor"`)
			}
			if !rw.wrote {
				writeErr(rw, e)
			}
			result = e.Code
			ev = s.log.Info()
			if e.Status >= 500 {
				ev = s.log.Error().AnErr("cause", e.Cause)
			}
			ev = ev.Str("error", e.Message)
		} else if r.Method != http.MethodGet {
			ev = s.log.Info()
		}
		took := time.Since(start)
		ev.Str("request_id", id).Str("method", r.Method).Str("path", r.URL.Path).Str("route", route).
			Str("token", token).Int("status", rw.status).Dur("took", took).Str("remote", r.RemoteAddr).Msg("request")
		if s.cfg.OnRequest != nil {
			s.cfg.OnRequest(route, rw.status, took)
		}
		if need == Write && token != "" {
			// The client has its answer first; the record follows at once.
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			s.recordAudit(r, rec, id, token, route, rw.status, result)
		}
	})
}

// admit checks the Host header (on loopback), that a write does not come
// from another site's page, and the token.
func (s *Server) admit(r *http.Request, need Access) (string, error) {
	if s.cfg.LoopbackOnly {
		if err := checkHost(r); err != nil {
			return "", err
		}
	}
	if need == Write {
		if err := checkSameOrigin(r); err != nil {
			return "", err
		}
	}
	return s.cfg.Tokens.authorize(r, need)
}

// call runs h, turning a panic into a 500.
func (s *Server) call(h handlerFunc, w http.ResponseWriter, r *http.Request, id string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error().Str("request_id", id).Interface("panic", p).Msg("handler panicked")
			err = &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error; see the daemon's log"}
		}
	}()
	return h(w, r)
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (flushes and
// deadlines for GET /v1/events).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}
