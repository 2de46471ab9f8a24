package httpapi

import (
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/policy"
)

const (
	writeTok = "write-token-0123456789abcdef"
	readTok  = "read-token-0123456789abcdef"
)

func newAuthServer(t *testing.T) *Server {
	t.Helper()
	srv, _, _ := newTestServer(t)
	dir := t.TempDir()
	wf, rf := filepath.Join(dir, "w"), filepath.Join(dir, "r")
	os.WriteFile(wf, []byte(writeTok+"\n"), 0o600)
	os.WriteFile(rf, []byte(readTok), 0o600)
	ts := &TokenSource{WriteFile: wf, ReadFile: rf}
	if err := ts.Load(); err != nil {
		t.Fatal(err)
	}
	srv.cfg.Tokens = ts
	return srv
}

func TestTokens(t *testing.T) {
	srv := newAuthServer(t)
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	for _, tc := range []struct {
		name   string
		c      call
		status int
		code   string
	}{
		{"healthz needs nothing", call{method: "GET", path: "/healthz"}, 200, ""},
		{"no token", call{method: "GET", path: "/v1/streams"}, 401, CodeUnauthorized},
		{"wrong token", call{method: "GET", path: "/v1/streams", header: bearer("nope")}, 401, CodeUnauthorized},
		{"garbage scheme", call{method: "GET", path: "/v1/streams", header: map[string]string{"Authorization": "Basic Zm9vOmJhcg=="}}, 401, CodeUnauthorized},
		{"empty bearer", call{method: "GET", path: "/v1/streams", header: map[string]string{"Authorization": "Bearer "}}, 401, CodeUnauthorized},
		{"token in the query", call{method: "GET", path: "/v1/streams?token=" + writeTok}, 400, CodeInvalid},
		{"read token reads", call{method: "GET", path: "/v1/streams", header: bearer(readTok)}, 200, ""},
		{"read token cannot write", call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`, header: bearer(readTok)}, 403, CodeForbidden},
		{"read token cannot use createstream", call{method: "GET", path: "/createstream/9001/a:1", header: bearer(readTok)}, 403, ""},
		{"write token writes", call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`, header: bearer(writeTok)}, 201, ""},
		{"lower-case scheme", call{method: "GET", path: "/v1/status", header: map[string]string{"Authorization": "bearer " + writeTok}}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, body := do(t, srv, tc.c)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if code, _ := errorOf(body); tc.code != "" && code != tc.code {
				t.Fatalf("code %q, want %q", code, tc.code)
			}
			if rec.Code == 401 && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Fatal("401 without WWW-Authenticate")
			}
			if strings.Contains(rec.Body.String(), writeTok) || strings.Contains(rec.Body.String(), readTok) {
				t.Fatal("a token appears in the answer")
			}
		})
	}
	// Two Authorization headers are refused.
	req := httptest.NewRequest("GET", "/v1/streams", nil)
	req.Header.Add("Authorization", "Bearer "+writeTok)
	req.Header.Add("Authorization", "Bearer "+writeTok)
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Fatalf("duplicate Authorization: %d", rec.Code)
	}
}

func TestTokenFileIsReloaded(t *testing.T) {
	f := filepath.Join(t.TempDir(), "token")
	os.WriteFile(f, []byte("first-token-0123456789"), 0o600)
	ts := &TokenSource{WriteFile: f}
	if err := ts.Load(); err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer second-token-0123456789")
	if _, err := ts.authorize(req, Read); err == nil {
		t.Fatal("accepted a token before it was set")
	}
	os.WriteFile(f, []byte("second-token-0123456789"), 0o600)
	if err := ts.Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.authorize(req, Read); err != nil {
		t.Fatalf("the new token is refused after a reload: %v", err)
	}
	os.WriteFile(f, []byte(""), 0o600)
	if err := ts.Load(); err == nil {
		t.Fatal("an empty token file was accepted")
	}
	if _, err := ts.authorize(req, Read); err != nil {
		t.Fatal("a failed reload dropped the token in force")
	}
	if err := (&TokenSource{WriteToken: "", ReadToken: "only-read-token-0123"}).Load(); err == nil {
		t.Fatal("a read token without a write token was accepted")
	}
}

func TestHostAndOriginOnLoopback(t *testing.T) {
	srv, _, _ := newTestServer(t)
	srv.cfg.LoopbackOnly = true
	for _, tc := range []struct {
		host, origin string
		status       int
	}{
		{"127.0.0.1:8080", "", 200},
		{"localhost:8080", "", 200},
		{"[::1]:8080", "", 200},
		{"evil.example:8080", "", 403},
		{"127.0.0.1.nip.io", "", 403},
		{"localhost:8080", "http://evil.example", 403},
		{"localhost:8080", "http://localhost:3000", 200},
	} {
		req := httptest.NewRequest("GET", "/v1/streams", nil)
		req.Host = tc.host
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("Host %q Origin %q: %d, want %d", tc.host, tc.origin, rec.Code, tc.status)
		}
	}
}

func TestWritesAreAudited(t *testing.T) {
	srv, st, _ := newTestServer(t)
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`})
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"b:1"}`})
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"backend":"bad;"}`})
	do(t, srv, call{method: "DELETE", path: "/v1/streams/tcp/9001"})
	do(t, srv, call{method: "GET", path: "/v1/streams"})
	entries, err := st.Audit(0, 10)
	if err != nil || len(entries) != 4 {
		t.Fatalf("%d audit entries, %v", len(entries), err)
	}
	del, bad, replace := entries[0], entries[1], entries[2]
	if del.Request != "DELETE /v1/streams/tcp/9001" || del.Before == nil || del.Before.Backends[0] != "b:1" || del.After != nil || del.Outcome != 204 {
		t.Errorf("delete entry %+v", del)
	}
	if bad.Outcome != 400 || bad.Result != CodeInvalid {
		t.Errorf("refused entry %+v", bad)
	}
	if replace.Before.Backends[0] != "a:1" || replace.After.Backends[0] != "b:1" || replace.Actor != "none" {
		t.Errorf("replace entry %+v", replace)
	}
	rec, body := do(t, srv, call{method: "GET", path: "/v1/audit?limit=2"})
	if rec.Code != 200 || len(body["entries"].([]any)) != 2 || !strings.Contains(body["next"].(string), "before=") {
		t.Fatalf("/v1/audit: %s", rec.Body)
	}
}

// A backend a rule refuses is a 403 naming the rule, in the backends
// field, and nothing is stored.
func TestRefusedBackendIs403(t *testing.T) {
	srv, st, _ := newTestServerWith(t, &policy.Backends{APIPort: 9005, PortMin: 9000, PortMax: 9009})
	for backend, rule := range map[string]string{"127.0.0.1:9005": "self-proxy", "127.0.0.1:9003": "loop", "169.254.169.254:80": "link-local"} {
		rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"` + backend + `"}`})
		code, field := errorOf(body)
		if rec.Code != 403 || code != CodeForbidden || field != "backends" || !strings.Contains(rec.Body.String(), "rule: "+rule) {
			t.Errorf("%s: %d %s", backend, rec.Code, rec.Body)
		}
	}
	if l, _ := st.List(); len(l) != 0 {
		t.Fatalf("refused backends were stored: %v", l)
	}
}

// A stream that would forward to itself (its own port, on an address
// its listen address takes) is refused with 400 in the backends field,
// even where BACKEND_ALLOW names the address exactly (the loop rule's
// exception for a service on the same ports at another address of this
// host), and nothing is stored; bound to another address it is stored.
func TestSelfLoopIs400(t *testing.T) {
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	srv, st, _ := newTestServerWith(t, &policy.Backends{AllowCIDRs: allow, PortMin: 9000, PortMax: 9009})
	for _, c := range []call{
		{method: "PUT", path: "/v1/streams/tcp/9000-9003", body: `{"backend":"127.0.0.2","port_mode":"same"}`},
		{method: "PUT", path: "/v1/streams/tcp/9000-9003", body: `{"backend":"127.0.0.2","port_mode":"same","bind":"127.0.0.2"}`},
		{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"127.0.0.2:9001"}`},
		{method: "PUT", path: "/v1/streams/tcp/9000-9003", body: `{"backend":"127.0.0.2:9002","bind":"0.0.0.0"}`},
	} {
		rec, body := do(t, srv, c)
		code, field := errorOf(body)
		if rec.Code != 400 || code != CodeInvalid || field != "backends" ||
			!strings.Contains(rec.Body.String(), "connect to itself") || !strings.Contains(rec.Body.String(), "rule: loop") {
			t.Errorf("%s %s: %d %s", c.path, c.body, rec.Code, rec.Body)
		}
	}
	if l, _ := st.List(); len(l) != 0 {
		t.Fatalf("a stream forwarding to itself was stored: %v", l)
	}
	rec, _ := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9000-9003", body: `{"backend":"127.0.0.2","port_mode":"same","bind":"127.0.0.1"}`})
	if rec.Code != 201 {
		t.Fatalf("the range on another address: %d %s", rec.Code, rec.Body)
	}
}
