package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/policy"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/writes"
)

// fakeApplier applies everything at once, except the streams it is told
// nginx rejects; with hang set it never applies.
type fakeApplier struct {
	mu      sync.Mutex
	reject  map[string]string // backend -> nginx's message
	busy    map[int]bool
	hang    bool
	st      *store.Store
	version uint64
	onDisk  map[string][]byte
	// leftover: deleted streams whose file could not be removed.
	leftover map[stream.ID]string
}

func (f *fakeApplier) Leftover(id stream.ID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if why, ok := f.leftover[id]; ok {
		return errors.New(why)
	}
	return nil
}

func (f *fakeApplier) WaitApplied(ctx context.Context, rev uint64, _ []stream.Spec) error {
	f.mu.Lock()
	hang := f.hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// Refused is what the write path asks: failed at rev.
func (f *fakeApplier) Refused(id stream.ID, rev uint64) (string, bool) {
	st := f.Status(id, rev)
	return st.Error, st.State == stream.Failed
}

func (f *fakeApplier) Status(id stream.ID, rev uint64) stream.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hang {
		return stream.Status{State: stream.Pending, Revision: rev}
	}
	if sp, err := f.st.Get(id); err == nil && sp.Revision == rev {
		for _, b := range sp.Backends {
			if msg, ok := f.reject[b]; ok {
				return stream.Status{State: stream.Failed, Revision: rev, Error: msg}
			}
		}
	}
	return stream.Status{State: stream.Active, Revision: rev}
}

func (f *fakeApplier) BindConflict(s stream.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for port := s.Listen; port <= s.LastPort(); port++ { // every port of a range
		if f.busy[port] {
			return errors.New("bind() to 0.0.0.0:" + fmt.Sprint(port) + " failed (98: Address already in use)")
		}
	}
	return nil
}

func (f *fakeApplier) Preview(s stream.Spec) (string, []byte, []byte, error) {
	addrs := nginxconf.Addrs{}
	for _, n := range nginxconf.Names(s) {
		if strings.HasPrefix(n, "nx.") { // a name that does not resolve
			name := nginxconf.FileName("stream-", s.ID())
			return name, nil, f.onDisk[name], fmt.Errorf("%w: host not found in upstream %q", nginxconf.ErrNotRenderable, n)
		}
		addrs[n] = []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	}
	name, body, err := nginxconf.Render(s, addrs, nginxconf.RenderOptions{Prefix: "stream-"})
	return name, body, f.onDisk[name], err
}

func (f *fakeApplier) StatusVersion() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.version
}

// NodeStatus counts the streams by their status, as the reconciler's
// last pass does.
func (f *fakeApplier) NodeStatus() stream.NodeStatus {
	h := stream.NodeStatus{NginxRunning: true, Counters: stream.NodeCounters{Passes: 1}}
	specs, _ := f.st.List()
	for _, sp := range specs {
		st := f.Status(sp.ID(), sp.Revision)
		if st.State == stream.Active {
			h.Streams.Active++
			continue
		}
		h.Streams.Failed++
		h.NotActive = append(h.NotActive, stream.StreamStatus{ID: sp.ID(), Status: st})
	}
	return h
}

func newTestServer(t testing.TB) (*Server, *store.Store, *fakeApplier) {
	t.Helper()
	return newTestServerWith(t, &policy.Backends{})
}

// newTestServerWith is newTestServer with the backend policy pol.
func newTestServerWith(t testing.TB, pol *policy.Backends) (*Server, *store.Store, *fakeApplier) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ap := &fakeApplier{st: st, reject: map[string]string{"bad.invalid:1": `host not found in upstream "bad.invalid:1"`}, busy: map[int]bool{9008: true}}
	wp := writes.New(writes.Config{PortMin: 9000, PortMax: 9009, Reserved: []int{9005}, ApplyTimeout: 200 * time.Millisecond,
		OnUndo: AuditUndos(st, zerolog.Nop()), Log: zerolog.Nop()},
		st, ap, pol)
	t.Cleanup(wp.Close)
	srv := New(Config{PortMin: 9000, PortMax: 9009, ApplyTimeout: 200 * time.Millisecond, Version: "test", Log: zerolog.Nop()}, st, ap, wp)
	return srv, st, ap
}

type call struct {
	method, path, body string
	header             map[string]string
}

func do(t *testing.T, h http.Handler, c call) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body map[string]any
	if rec.Body.Len() > 0 && rec.Body.Bytes()[0] == '{' {
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s %s: body is not JSON: %v\n%s", c.method, c.path, err, rec.Body)
		}
	}
	return rec, body
}

func errorOf(body map[string]any) (code, field string) {
	e, _ := body["error"].(map[string]any)
	code, _ = e["code"].(string)
	field, _ = e["field"].(string)
	return code, field
}

func TestBadInputIsRefusedWithFieldAndStateIntact(t *testing.T) {
	srv, st, _ := newTestServer(t)
	if _, _, err := st.Put(stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"keep:1"}}, store.Match{}); err != nil {
		t.Fatal(err)
	}
	rev := st.Revision()
	put := func(path, body string) call { return call{method: "PUT", path: path, body: body} }
	for _, tc := range []struct {
		name   string
		c      call
		status int
		code   string
		field  string
	}{
		{"port 0", put("/v1/streams/tcp/0", `{"backend":"a:1"}`), 400, CodeInvalid, "listen"},
		{"port 70000", put("/v1/streams/tcp/70000", `{"backend":"a:1"}`), 400, CodeInvalid, "listen"},
		{"port with leading zero", put("/v1/streams/tcp/09001", `{"backend":"a:1"}`), 400, CodeInvalid, "listen"},
		{"hex port", put("/v1/streams/tcp/0x2329", `{"backend":"a:1"}`), 400, CodeInvalid, "listen"},
		{"negative port", put("/v1/streams/tcp/-9001", `{"backend":"a:1"}`), 400, CodeInvalid, "listen"},
		{"outside range", put("/v1/streams/tcp/9010", `{"backend":"a:1"}`), 400, CodeInvalid, "listen"},
		{"API port", put("/v1/streams/tcp/9005", `{"backend":"a:1"}`), 400, CodeInvalid, "listen"},
		{"bad protocol", put("/v1/streams/sctp/9001", `{"backend":"a:1"}`), 400, CodeInvalid, "protocol"},
		{"body disagrees with URL", put("/v1/streams/tcp/9001", `{"listen":9002,"backend":"a:1"}`), 400, CodeInvalid, "listen"},
		{"backend without port", put("/v1/streams/tcp/9001", `{"backend":"a"}`), 400, CodeInvalid, "backends"},
		{"backend with semicolon", put("/v1/streams/tcp/9001", `{"backend":"a:1;"}`), 400, CodeInvalid, "backends"},
		{"backend with brace", put("/v1/streams/tcp/9001", `{"backend":"a:1}"}`), 400, CodeInvalid, "backends"},
		{"backend with newline", put("/v1/streams/tcp/9001", `{"backend":"a:1\n"}`), 400, CodeInvalid, "backends"},
		{"backend and backends", put("/v1/streams/tcp/9001", `{"backend":"a:1","backends":["b:1"]}`), 400, CodeInvalid, "backend"},
		{"bad CIDR", put("/v1/streams/tcp/9001", `{"backend":"a:1","allow":["1.2.3.4/40"]}`), 400, CodeInvalid, "allow"},
		{"unknown field", put("/v1/streams/tcp/9001", `{"backend":"a:1","backnd":"x"}`), 400, CodeInvalid, "backnd"},
		{"wrong type", put("/v1/streams/tcp/9001", `{"backends":"a:1"}`), 400, CodeInvalid, "backends"},
		{"wrong type number", put("/v1/streams/tcp/9001", `{"backend":"a:1","max_fails":"3"}`), 400, CodeInvalid, "max_fails"},
		{"trailing data", put("/v1/streams/tcp/9001", `{"backend":"a:1"} {}`), 400, CodeMalformed, ""},
		{"syntax error", put("/v1/streams/tcp/9001", `{"backend":`), 400, CodeMalformed, ""},
		{"not an object", put("/v1/streams/tcp/9001", `["a:1"]`), 400, CodeMalformed, ""},
		{"empty body", call{method: "PUT", path: "/v1/streams/tcp/9001"}, 400, CodeMalformed, ""},
		{"form body", call{method: "PUT", path: "/v1/streams/tcp/9001", body: `backend=a:1`, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415, CodeMediaType, ""},
		{"huge body", put("/v1/streams/tcp/9001", `{"description":"`+strings.Repeat("x", MaxBodyBytes)+`"}`), 413, CodeTooLarge, ""},
		{"bad If-Match", call{method: "PUT", path: "/v1/streams/tcp/9000", body: `{"backend":"a:1"}`, header: map[string]string{"Content-Type": "application/json", "If-Match": "yesterday"}}, 400, CodeInvalid, "If-Match"},
		{"stale If-Match", call{method: "PUT", path: "/v1/streams/tcp/9000", body: `{"backend":"a:1"}`, header: map[string]string{"Content-Type": "application/json", "If-Match": `"999"`}}, 412, CodeRevision, ""},
		{"If-None-Match on existing", call{method: "PUT", path: "/v1/streams/tcp/9000", body: `{"backend":"a:1"}`, header: map[string]string{"Content-Type": "application/json", "If-None-Match": "*"}}, 412, CodeRevision, ""},
		{"stale If-Match delete", call{method: "DELETE", path: "/v1/streams/tcp/9000", header: map[string]string{"If-Match": `"999"`}}, 412, CodeRevision, ""},
		{"port taken by another process", put("/v1/streams/tcp/9008", `{"backend":"a:1"}`), 409, CodePortInUse, "listen"},
		{"unknown route", call{method: "GET", path: "/v2/streams"}, 404, CodeNotFound, ""},
		{"missing stream", call{method: "GET", path: "/v1/streams/tcp/9001"}, 404, CodeNotFound, ""},
		{"delete missing", call{method: "DELETE", path: "/v1/streams/udp/9001"}, 404, CodeNotFound, ""},
		{"method not allowed", call{method: "PATCH", path: "/v1/streams/tcp/9000", body: `{}`}, 405, CodeMethodNotAllowed, ""},
		{"POST with a port", call{method: "POST", path: "/v1/streams", body: `{"listen":9001,"backend":"a:1"}`}, 400, CodeInvalid, "listen"},
		{"seed bad backend", call{method: "GET", path: "/createstream/9001/a%3B:1"}, 400, "", ""},
		{"seed bad port", call{method: "GET", path: "/createstream/99999/a:1"}, 400, "", ""},
		{"seed remove missing", call{method: "GET", path: "/removestream/9003"}, 404, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, body := do(t, srv, tc.c)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			if strings.HasPrefix(tc.c.path, "/v1/") || strings.HasPrefix(tc.c.path, "/v2/") {
				code, field := errorOf(body)
				if code != tc.code || field != tc.field {
					t.Fatalf("error code %q field %q, want %q %q: %s", code, field, tc.code, tc.field, rec.Body)
				}
				if e := body["error"].(map[string]any); e["message"] == "" {
					t.Fatal("error without a message")
				}
			} else if body["result"] != "error" || len(body["errors"].([]any)) != 1 {
				t.Fatalf("seed error shape: %s", rec.Body)
			}
		})
	}
	if st.Revision() != rev {
		t.Fatalf("refused requests changed the store: revision %d -> %d", rev, st.Revision())
	}
}

func TestStreamLifecycle(t *testing.T) {
	srv, _, _ := newTestServer(t)
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"Backend.Example:2000","description":"db"}`})
	if rec.Code != 201 || rec.Header().Get("ETag") != `"1"` || rec.Header().Get("Location") != "/v1/streams/tcp/9001" {
		t.Fatalf("create: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if body["id"] != "tcp/9001" || body["backends"].([]any)[0] != "backend.example:2000" || body["status"].(map[string]any)["state"] != "active" {
		t.Fatalf("create body: %s", rec.Body)
	}
	// The same PUT again changes nothing.
	rec, _ = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"backend.example:2000","description":"db"}`})
	if rec.Code != 200 || rec.Header().Get("ETag") != `"1"` {
		t.Fatalf("idempotent PUT: %d %s", rec.Code, rec.Header().Get("ETag"))
	}
	rec, _ = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backends":["a:1","b:1"],"balance":"least_conn"}`, header: map[string]string{"If-Match": `"1"`}})
	if rec.Code != 200 || rec.Header().Get("ETag") != `"2"` {
		t.Fatalf("replace: %d %s", rec.Code, rec.Body)
	}
	rec, body = do(t, srv, call{method: "GET", path: "/v1/streams"})
	if rec.Code != 200 || len(body["streams"].([]any)) != 1 {
		t.Fatalf("list: %s", rec.Body)
	}
	rec, body = do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9001"})
	if rec.Code != 200 || body["balance"] != "least_conn" || rec.Header().Get("ETag") != `"2"` {
		t.Fatalf("get: %s", rec.Body)
	}
	rec, _ = do(t, srv, call{method: "DELETE", path: "/v1/streams/tcp/9001", header: map[string]string{"If-Match": `"2"`}})
	if rec.Code != 204 {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	rec, _ = do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9001"})
	if rec.Code != 404 {
		t.Fatalf("get after delete: %d", rec.Code)
	}
}

func TestRejectedCreateIsRemovedAndRejectedUpdateRolledBack(t *testing.T) {
	srv, st, _ := newTestServer(t)
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"bad.invalid:1"}`})
	if code, _ := errorOf(body); rec.Code != 422 || code != CodeNginxRejected || !strings.Contains(rec.Body.String(), "host not found") {
		t.Fatalf("rejected create: %d %s", rec.Code, rec.Body)
	}
	if _, err := st.Get(stream.MustParseID("tcp/9001")); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("the store kept a stream nginx rejected")
	}
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"backend":"good:1"}`})
	rec, _ = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"backend":"bad.invalid:1"}`})
	if rec.Code != 422 {
		t.Fatalf("rejected update: %d %s", rec.Code, rec.Body)
	}
	if sp, err := st.Get(stream.MustParseID("tcp/9002")); err != nil || sp.Backends[0] != "good:1" {
		t.Fatalf("rejected update not rolled back: %+v %v", sp, err)
	}
}

func TestApplyTimeoutAnswers503WithPendingStream(t *testing.T) {
	srv, st, ap := newTestServer(t)
	ap.hang = true
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/udp/9001", body: `{"backend":"a:1"}`})
	if code, _ := errorOf(body); rec.Code != 503 || code != CodeApplyTimeout {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if s := body["stream"].(map[string]any)["status"].(map[string]any)["state"]; s != "pending" {
		t.Fatalf("stream state %v", s)
	}
	if _, err := st.Get(stream.MustParseID("udp/9001")); err != nil {
		t.Fatal("a write that timed out was not kept: it will still be applied")
	}
	rec, _ = do(t, srv, call{method: "PUT", path: "/v1/streams/udp/9002?wait=false", body: `{"backend":"a:1"}`})
	if rec.Code != 202 {
		t.Fatalf("wait=false: %d", rec.Code)
	}
}

func TestPostAllocatesDistinctPortsConcurrently(t *testing.T) {
	srv, _, _ := newTestServer(t)
	// Range 9000-9009 less the API port (9005) and a busy port (9008): 8.
	const clients = 9
	codes := make(chan int, clients)
	ports := make(chan float64, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, body := do(t, srv, call{method: "POST", path: "/v1/streams", body: `{"backend":"a:1"}`})
			codes <- rec.Code
			if rec.Code == 201 {
				ports <- body["listen"].(float64)
			}
		}()
	}
	wg.Wait()
	close(codes)
	close(ports)
	n201, n409 := 0, 0
	for c := range codes {
		switch c {
		case 201:
			n201++
		case 409:
			n409++
		}
	}
	seen := map[float64]bool{}
	for p := range ports {
		if seen[p] || p == 9005 || p == 9008 {
			t.Errorf("port %v given twice, or the API's, or a busy one", p)
		}
		seen[p] = true
	}
	if n201 != 8 || n409 != 1 {
		t.Fatalf("%d created, %d refused; want 8 and 1", n201, n409)
	}
}

func TestSeedRoutes(t *testing.T) {
	srv, _, _ := newTestServer(t)
	rec, body := do(t, srv, call{method: "GET", path: "/status"})
	if rec.Code != 200 || body["version"] != "test" || body["available_ports"] != float64(8) {
		t.Fatalf("/status: %s", rec.Body)
	}
	rec, body = do(t, srv, call{method: "GET", path: "/getfreeport"})
	if rec.Code != 200 || body["result"] != "ok" || body["port"] != float64(9000) {
		t.Fatalf("/getfreeport: %s", rec.Body)
	}
	rec, body = do(t, srv, call{method: "GET", path: "/createstream/9000/backend:2000"})
	if rec.Code != 200 || body["result"] != "ok" || len(body["errors"].([]any)) != 0 {
		t.Fatalf("/createstream: %s", rec.Body)
	}
	rec, body = do(t, srv, call{method: "GET", path: "/hasstream/9000"})
	if body["result"] != "true" {
		t.Fatalf("/hasstream: %s", rec.Body)
	}
	rec, _ = do(t, srv, call{method: "GET", path: "/getstreams"})
	var list []map[string]any
	json.Unmarshal(rec.Body.Bytes(), &list)
	if len(list) != 1 || list[0]["listen"] != float64(9000) || list[0]["proxy_pass"] != "backend:2000" {
		t.Fatalf("/getstreams: %s", rec.Body)
	}
	rec, body = do(t, srv, call{method: "GET", path: "/getfreeport"})
	if body["port"] != float64(9001) {
		t.Fatalf("/getfreeport after create: %s", rec.Body)
	}
	rec, body = do(t, srv, call{method: "GET", path: "/removestream/9000"})
	if rec.Code != 200 || body["result"] != "ok" {
		t.Fatalf("/removestream: %s", rec.Body)
	}
	_, body = do(t, srv, call{method: "GET", path: "/hasstream/9000"})
	if body["result"] != "false" {
		t.Fatal("/hasstream after remove")
	}
}

func TestHealthStatusAndPanics(t *testing.T) {
	srv, _, _ := newTestServer(t)
	for _, path := range []string{"/healthz", "/readyz", "/v1/status"} {
		if rec, _ := do(t, srv, call{method: "GET", path: path}); rec.Code != 200 {
			t.Errorf("%s: %d %s", path, rec.Code, rec.Body)
		}
	}
	h := srv.handle("/panic", Open, func(w http.ResponseWriter, r *http.Request) error { panic("secret internals") })
	rec, body := do(t, h, call{method: "GET", path: "/panic"})
	if code, _ := errorOf(body); rec.Code != 500 || code != CodeInternal || strings.Contains(rec.Body.String(), "secret") {
		t.Fatalf("panic: %d %s", rec.Code, rec.Body)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	srv, st, ap := newTestServer(t)
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001?dry_run=true", body: `{"backend":"a:1"}`})
	if rec.Code != 200 || body["change"] != "create" || body["file"] != "stream-tcp-9001.conf" ||
		!strings.Contains(body["config"].(string), "proxy_pass 192.0.2.1:1;") || !strings.Contains(body["diff"].(string), "+    proxy_pass 192.0.2.1:1;") {
		t.Fatalf("dry run: %d %s", rec.Code, rec.Body)
	}
	if l, _ := st.List(); len(l) != 0 {
		t.Fatal("a dry run stored the stream")
	}
	_, old, _, _ := ap.Preview(stream.Spec{Protocol: stream.TCP, Listen: 9001, Backends: []string{"a:1"}})
	ap.onDisk = map[string][]byte{"stream-tcp-9001.conf": old}
	_, body = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001?dry_run=true", body: `{"backend":"b:2"}`})
	if body["change"] != "update" || !strings.Contains(body["diff"].(string), "-    proxy_pass 192.0.2.1:1;") || !strings.Contains(body["diff"].(string), "+    proxy_pass 192.0.2.1:2;") {
		t.Fatalf("update dry run: %v", body)
	}
	rec, _ = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001?dry_run=true", body: `{"backend":"a:1;"}`})
	if rec.Code != 400 {
		t.Fatalf("a dry run skipped validation: %d", rec.Code)
	}
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9003", body: `{"backend":"c:3"}`})
	_, c3, _, _ := ap.Preview(stream.Spec{Protocol: stream.TCP, Listen: 9003, Backends: []string{"c:3"}})
	ap.onDisk["stream-tcp-9003.conf"] = c3
	rec, body = do(t, srv, call{method: "DELETE", path: "/v1/streams/tcp/9003?dry_run=true"})
	if rec.Code != 200 || body["change"] != "delete" || !strings.Contains(body["diff"].(string), "-    proxy_pass 192.0.2.1:3;") {
		t.Fatalf("DELETE dry run: %d %s", rec.Code, rec.Body)
	}
	if _, err := st.Get(stream.MustParseID("tcp/9003")); err != nil {
		t.Fatal("a DELETE dry run deleted the stream")
	}
	// Preconditions hold for a dry run: it answers what the write would.
	for _, h := range []map[string]string{{"If-None-Match": "*"}, {"If-Match": `"999"`}} {
		rec, _ = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9003?dry_run=true", body: `{"backend":"c:4"}`, header: h})
		if rec.Code != 412 {
			t.Fatalf("dry run with %v on a stream that exists: %d %s; want 412 as the write", h, rec.Code, rec.Body)
		}
	}
	rec, body = do(t, srv, call{method: "POST", path: "/v1/streams?dry_run=true", body: `{"backend":"a:1"}`})
	if rec.Code != 200 || body["file"] != "stream-tcp-9000.conf" {
		t.Fatalf("POST dry run: %d %s", rec.Code, rec.Body)
	}
	if l, _ := st.List(); len(l) != 1 {
		t.Fatal("a dry run stored a stream")
	}
}

// A delete whose file nginx still loads (it could not be removed) is not
// answered 204, which would say the port is closed: 503 not_applied with
// why; the delete itself stays stored.
func TestDeleteLeftInNginxIsNot204(t *testing.T) {
	srv, st, ap := newTestServer(t)
	if _, _, err := st.Put(stream.Spec{Protocol: stream.TCP, Listen: 9001, Backends: []string{"127.0.0.1:2000"}}, store.Match{}); err != nil {
		t.Fatal(err)
	}
	ap.leftover = map[stream.ID]string{stream.MustParseID("tcp/9001"): "its file could not be removed"}
	rec, body := do(t, srv, call{method: "DELETE", path: "/v1/streams/tcp/9001"})
	if code, _ := errorOf(body); rec.Code != 503 || code != CodeNotApplied || !strings.Contains(rec.Body.String(), "could not be removed") {
		t.Fatalf("DELETE with a leftover file: %d %s", rec.Code, rec.Body)
	}
	if _, err := st.Get(stream.MustParseID("tcp/9001")); err == nil {
		t.Fatal("the delete was not stored")
	}
	ap.leftover = nil
	if _, _, err := st.Put(stream.Spec{Protocol: stream.TCP, Listen: 9002, Backends: []string{"127.0.0.1:2000"}}, store.Match{}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := do(t, srv, call{method: "DELETE", path: "/v1/streams/tcp/9002"}); rec.Code != 204 {
		t.Fatalf("a clean DELETE: %d %s", rec.Code, rec.Body)
	}
	// The original service's remove route says the same, in its shape.
	if _, _, err := st.Put(stream.Spec{Protocol: stream.TCP, Listen: 9003, Backends: []string{"127.0.0.1:2000"}}, store.Match{}); err != nil {
		t.Fatal(err)
	}
	ap.leftover = map[stream.ID]string{stream.MustParseID("tcp/9003"): "its file could not be removed"}
	if rec, body := do(t, srv, call{method: "GET", path: "/removestream/9003"}); rec.Code != 503 || body["result"] != "error" {
		t.Fatalf("seed remove with a leftover file: %d %s", rec.Code, rec.Body)
	}
}

// A dry run of a spec that cannot be rendered now (a name that does not
// resolve) is the 422 the write would get, not a 500; a delete's dry run
// of such a stream renders nothing and answers.
func TestDryRunOfAnUnrenderableSpec(t *testing.T) {
	srv, st, _ := newTestServer(t)
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001?dry_run=true", body: `{"backend":"nx.example:1"}`})
	if code, _ := errorOf(body); rec.Code != 422 || code != CodeNginxRejected || !strings.Contains(rec.Body.String(), "nx.example") {
		t.Fatalf("dry run of an unresolvable name: %d %s", rec.Code, rec.Body)
	}
	if _, _, err := st.Put(stream.Spec{Protocol: stream.TCP, Listen: 9002, Backends: []string{"nx.example:1"}}, store.Match{}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := do(t, srv, call{method: "DELETE", path: "/v1/streams/tcp/9002?dry_run=true"}); rec.Code != 200 {
		t.Fatalf("delete dry run of an unrenderable stream: %d %s", rec.Code, rec.Body)
	}
}
