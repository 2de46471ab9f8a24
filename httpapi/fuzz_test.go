package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/nginxconf"
)

// checkAnswer holds for every answer: never a 5xx, always JSON, and a
// stream the store accepted is one the validator accepts and that renders
// to exactly one server block.
func checkAnswer(t *testing.T, srv *Server, code int, body []byte) {
	t.Helper()
	if code >= 500 {
		t.Fatalf("status %d: %s", code, body)
	}
	if !json.Valid(body) {
		t.Fatalf("answer is not JSON: %q", body)
	}
	list, _ := srv.store.List()
	for _, sp := range list {
		if _, err := nginxconf.Validate(sp, srv.writes.Rules()); err != nil {
			t.Fatalf("the store holds a spec the validator refuses: %+v: %v", sp, err)
		}
		addrs := nginxconf.Addrs{}
		for _, n := range nginxconf.Names(sp) {
			addrs[n] = []netip.Addr{netip.MustParseAddr("192.0.2.1")}
		}
		_, out, err := nginxconf.Render(sp, addrs, nginxconf.RenderOptions{Prefix: "stream-"})
		if err != nil {
			t.Fatalf("stored spec does not render: %v", err)
		}
		if bytes.Count(out, []byte("server {")) != 1 {
			t.Fatalf("stored spec renders to %d server blocks", bytes.Count(out, []byte("server {")))
		}
	}
}

// FuzzSeedRoutes drives the original service's createstream route with
// arbitrary path parameters.
func FuzzSeedRoutes(f *testing.F) {
	for _, s := range []struct{ port, backend string }{
		{"9001", "backend:2000"}, {"9001", "a:1;"}, {"-1", "a:1"}, {"9001", "..%2f.."}, {"0x2329", "a:1"},
		{"9001", "a:1}"}, {"9001", "$host:1"}, {"9001", "[::1]:80"}, {"9001", "a\x00:1"}, {"9000.5", "a:1"},
	} {
		f.Add(s.port, s.backend)
	}
	srv, _, _ := newTestServer(f)
	f.Fuzz(func(t *testing.T, port, backend string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.URL.Path = "/createstream/" + port + "/" + backend
		req.URL.RawPath = "/createstream/" + url.PathEscape(port) + "/" + url.PathEscape(backend)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		checkAnswer(t, srv, rec.Code, rec.Body.Bytes())
	})
}

// FuzzStreamBody drives PUT /v1/streams with arbitrary bodies.
func FuzzStreamBody(f *testing.F) {
	for _, b := range []string{
		`{"backend":"a:1"}`, `{"backends":["a:1","b:2"],"balance":"least_conn"}`, `{"backend":"a:1;"}`,
		`{"backend":"a:1","allow":["all; allow all"]}`, `{"listen":9001.5}`, `{"backend":"a:1"} {}`, `[]`, `null`,
		`{"backend":"a:1","bind":"127.0.0.1; include x"}`, `{"backend":"a:1","max_fails":-1}`, `{"backend":"\u0000"}`,
		`{"backend":"a:1","connect_timeout":"1s; x"}`, `{"protocol":"udp","backend":"a:1","proxy_protocol":true}`,
		`{"backend":"a:1","max_connections":10,"max_connections_per_client":2,"upload_rate":"512k","download_rate":"1m","deny":["10.0.0.1"]}`,
		`{"backend":"a:1","max_connections":65536,"upload_rate":"1m; x","deny":["all; allow all"],"allow":["10.0.0.0/8"]}`,
	} {
		f.Add(b)
	}
	srv, _, _ := newTestServer(f)
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("PUT", "/v1/streams/tcp/9001", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		checkAnswer(t, srv, rec.Code, rec.Body.Bytes())
	})
}
