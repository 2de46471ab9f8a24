package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// GET /v1/whoami says what the caller's token may do: read or write, its
// id, and whether the API needs a token at all; no or a wrong token is a
// 401 like any read.
func TestWhoami(t *testing.T) {
	open, _, _ := newTestServer(t)
	secured := newAuthServer(t)
	for _, tc := range []struct {
		name   string
		srv    *Server
		auth   string
		status int
		access string
		token  string // prefix of the token id
		hasTok bool
	}{
		{"no token configured", open, "", 200, "write", "", false},
		{"write token", secured, "Bearer " + writeTok, 200, "write", "write:hmac-", true},
		{"read token", secured, "Bearer " + readTok, 200, "read", "read:hmac-", true},
		{"no token sent", secured, "", 401, "", "", false},
		{"wrong token", secured, "Bearer not-the-token-at-all", 401, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := call{method: "GET", path: "/v1/whoami", header: map[string]string{}}
			if tc.auth != "" {
				c.header["Authorization"] = tc.auth
			}
			rec, body := do(t, tc.srv, c)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status != 200 {
				if code, _ := errorOf(body); code != CodeUnauthorized {
					t.Fatalf("error code %q, want %q", code, CodeUnauthorized)
				}
				return
			}
			tok, _ := body["token"].(string)
			if body["access"] != tc.access || body["auth"] != tc.hasTok || !strings.HasPrefix(tok, tc.token) || (tc.token == "") != (tok == "") {
				t.Fatalf("answer %v, want access %s, auth %v, token %q...", body, tc.access, tc.hasTok, tc.token)
			}
			if strings.Contains(rec.Body.String(), writeTok) || strings.Contains(rec.Body.String(), readTok) {
				t.Fatal("the answer carries the token itself")
			}
		})
	}
}

// The dashboard is served to anyone (its files hold no secret, even when
// the API needs a token), with a policy that lets it load only its own
// files and be framed by no page; /ui sends to /ui/.
func TestUIFiles(t *testing.T) {
	srv := newAuthServer(t)
	for _, tc := range []struct {
		path, contentType, contains string
	}{
		{"/ui/", "text/html", `<script type="module" src="app.js"></script>`},
		{"/ui/app.js", "javascript", "/v1/events"},
		{"/ui/style.css", "text/css", ":root"},
	} {
		rec, _ := do(t, srv, call{method: "GET", path: tc.path})
		if rec.Code != 200 || !strings.Contains(rec.Header().Get("Content-Type"), tc.contentType) || !strings.Contains(rec.Body.String(), tc.contains) {
			t.Errorf("GET %s: %d %q, want 200 %s holding %q", tc.path, rec.Code, rec.Header().Get("Content-Type"), tc.contentType, tc.contains)
		}
		for h, want := range map[string]string{
			"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
		} {
			if got := rec.Header().Get(h); got != want {
				t.Errorf("GET %s: %s %q, want %q", tc.path, h, got, want)
			}
		}
	}
	rec, _ := do(t, srv, call{method: "GET", path: "/ui"})
	if rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q, want 301 to /ui/", rec.Code, rec.Header().Get("Location"))
	}
	rec, _ = do(t, srv, call{method: "GET", path: "/", header: map[string]string{"Accept": "text/html,application/xhtml+xml"}})
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "/ui/" {
		t.Errorf("GET / from a browser: %d to %q, want 302 to /ui/", rec.Code, rec.Header().Get("Location"))
	}
	rec, body := do(t, srv, call{method: "GET", path: "/"})
	if code, _ := errorOf(body); rec.Code != http.StatusNotFound || code != CodeNotFound {
		t.Errorf("GET / from curl: %d %v, want the JSON 404", rec.Code, body)
	}
	rec, _ = do(t, srv, call{method: "GET", path: "/ui/no-such-file.js"})
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /ui/no-such-file.js: %d, want 404", rec.Code)
	}
	// On loopback, a foreign Host (DNS rebinding) is refused here as on
	// every route.
	srv.cfg.LoopbackOnly = true
	for host, want := range map[string]int{"127.0.0.1:8080": 200, "localhost:8080": 200, "evil.example:8080": 403} {
		req := httptest.NewRequest("GET", "/ui/", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("GET /ui/ with Host %s: %d, want %d", host, rec.Code, want)
		}
	}
}
