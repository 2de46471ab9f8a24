package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// What a browser sends with a request that a page of another site makes
// (<img>, <a>, <form>, fetch), and what a page of the API's own origin
// sends. httptest requests have Host example.com.
var (
	crossSiteImg = map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image", "Referer": "http://evil.example/"}
	sameOrigin   = map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Referer": "http://example.com/ui", "Origin": "http://example.com"}
)

func headers(kv ...string) map[string]string {
	h := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = kv[i+1]
	}
	return h
}

// Every route that changes state refuses a request a page of another site
// made, with a 403 in the route's own error shape, and changes nothing;
// the same request from curl, or from a page of the API's own origin,
// goes through.
func TestCrossSiteWritesAreRefused(t *testing.T) {
	writes := []struct {
		name   string
		c      call
		seed   bool
		okCode int
	}{
		{"createstream", call{method: "GET", path: "/createstream/9002/a:1"}, true, 200},
		{"createstream dry run", call{method: "GET", path: "/createstream/9002/a:1?dry_run=true"}, true, 200},
		{"removestream", call{method: "GET", path: "/removestream/9000"}, true, 200},
		{"PUT", call{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"backend":"a:1"}`}, false, 201},
		{"POST", call{method: "POST", path: "/v1/streams", body: `{"backend":"a:1"}`}, false, 201},
		{"DELETE", call{method: "DELETE", path: "/v1/streams/tcp/9000"}, false, 204},
		{"import", call{method: "POST", path: "/v1/import", body: `{"streams":[{"protocol":"tcp","listen":9003,"backends":["a:1"]}]}`}, false, 200},
	}
	refused := []struct {
		name   string
		header map[string]string
		field  string
	}{
		{"img from another site", crossSiteImg, "Sec-Fetch-Site"},
		{"link from another site", headers("Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Referer", "http://evil.example/page"), "Sec-Fetch-Site"},
		{"same site, other port", headers("Sec-Fetch-Site", "same-site", "Referer", "http://example.com:3000/"), "Sec-Fetch-Site"},
		{"unknown Sec-Fetch-Site", headers("Sec-Fetch-Site", "Same-Origin"), "Sec-Fetch-Site"},
		{"only a foreign Referer", headers("Referer", "http://evil.example/"), "Referer"},
		{"Referer on another port", headers("Referer", "http://example.com:8081/x"), "Referer"},
		{"Referer on https", headers("Referer", "https://example.com/x"), "Referer"},
		{"Referer with user info", headers("Referer", "http://example.com@evil.example/"), "Referer"},
		{"Referer host suffix", headers("Referer", "http://example.com.evil.example/"), "Referer"},
		{"unparsable Referer", headers("Referer", "http://exa mple.com/%zz"), "Referer"},
		{"relative Referer", headers("Referer", "/x"), "Referer"},
		{"foreign Origin", headers("Origin", "http://evil.example"), "Origin"},
		{"null Origin", headers("Origin", "null"), "Origin"},
		{"same Referer, foreign Origin", headers("Referer", "http://example.com/", "Origin", "http://evil.example"), "Origin"},
		{"cross-site POST of a Blob", headers("Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "no-cors", "Origin", "http://evil.example"), "Sec-Fetch-Site"},
	}
	for _, wr := range writes {
		for _, tc := range refused {
			t.Run(wr.name+"/"+tc.name, func(t *testing.T) {
				srv, st := newCSRFServer(t)
				rev := st.Revision()
				c := wr.c
				c.header = merge(c.header, tc.header)
				if c.body != "" && tc.name == "cross-site POST of a Blob" {
					c.header["Content-Type"] = "" // a Blob of no type: no Content-Type
				}
				rec, body := do(t, srv, c)
				if rec.Code != 403 {
					t.Fatalf("status %d, want 403: %s", rec.Code, rec.Body)
				}
				if wr.seed {
					msgs, _ := body["errors"].([]any)
					if body["result"] != "error" || len(msgs) != 1 || !strings.HasPrefix(msgs[0].(string), tc.field+": ") {
						t.Fatalf("seed error shape naming %s: %s", tc.field, rec.Body)
					}
				} else if code, field := errorOf(body); code != CodeForbidden || field != tc.field {
					t.Fatalf("error %q field %q, want %q %q: %s", code, field, CodeForbidden, tc.field, rec.Body)
				}
				if st.Revision() != rev {
					t.Fatalf("a refused request changed the store: revision %d -> %d", rev, st.Revision())
				}
			})
		}
		for _, ok := range []struct {
			name   string
			header map[string]string
		}{
			{"curl", nil},
			{"same-origin page", sameOrigin},
			{"typed in the address bar", headers("Sec-Fetch-Site", "none", "Sec-Fetch-Mode", "navigate")},
			{"same-origin Referer, explicit port", headers("Referer", "http://EXAMPLE.com:80/x")},
		} {
			t.Run(wr.name+"/"+ok.name, func(t *testing.T) {
				srv, _ := newCSRFServer(t)
				c := wr.c
				c.header = merge(c.header, ok.header)
				if rec, _ := do(t, srv, c); rec.Code != wr.okCode {
					t.Fatalf("status %d, want %d: %s", rec.Code, wr.okCode, rec.Body)
				}
			})
		}
	}
}

// Reads are not writes: a page of another site may not read the answer
// (there are no CORS headers), and the rule leaves them alone.
func TestCrossSiteReadsAreServed(t *testing.T) {
	srv, _ := newCSRFServer(t)
	for _, path := range []string{"/v1/streams", "/hasstream/9000", "/getstreams", "/status", "/healthz"} {
		if rec, _ := do(t, srv, call{method: "GET", path: path, header: crossSiteImg}); rec.Code != 200 {
			t.Errorf("%s: %d %s", path, rec.Code, rec.Body)
		}
	}
}

// The rule holds with a token too, and is checked before the token: a
// page cannot send the token, but the rule stays the same everywhere.
func TestCrossSiteRefusedWithToken(t *testing.T) {
	srv := newAuthServer(t)
	bearer := map[string]string{"Authorization": "Bearer " + writeTok}
	for _, tc := range []struct {
		name   string
		c      call
		status int
	}{
		{"cross-site with the token", call{method: "GET", path: "/createstream/9001/a:1", header: merge(bearer, crossSiteImg)}, 403},
		{"cross-site without a token", call{method: "GET", path: "/createstream/9001/a:1", header: crossSiteImg}, 403},
		{"PUT cross-site with the token", call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`, header: merge(bearer, headers("Origin", "http://evil.example"))}, 403},
		{"same-origin with the token", call{method: "GET", path: "/createstream/9001/a:1", header: merge(bearer, sameOrigin)}, 200},
		{"curl with the token", call{method: "GET", path: "/removestream/9001", header: bearer}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if rec, _ := do(t, srv, tc.c); rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
		})
	}
}

func TestOriginOf(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"http://127.0.0.1:8080/x?y", "http://127.0.0.1:8080", true},
		{"http://LOCALHOST/", "http://localhost:80", true},
		{"https://[::1]/", "https://[::1]:443", true},
		{"HTTP://a.example:81", "http://a.example:81", true},
		{"null", "", false},
		{"file:///etc/passwd", "", false},
		{"http://", "", false},
		{"http:opaque", "", false},
		{"http://127.0.0.1:8080.evil.example/", "", false},
	} {
		if got, ok := originOf(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("originOf(%q) = %q %v, want %q %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// A token's id reveals nothing about the token: it is not a prefix of its
// SHA-256 (an offline guessing oracle for whoever reads the audit log), it
// is stable across loads with the same key file, and changes with the
// token and with the key.
func TestTokenIDRevealsNothing(t *testing.T) {
	dir := t.TempDir()
	tokFile, keyFile := filepath.Join(dir, "token"), filepath.Join(dir, "token-id.key")
	os.WriteFile(tokFile, []byte(writeTok), 0o600)
	load := func(key string) string {
		t.Helper()
		ts := &TokenSource{WriteFile: tokFile, IDKeyFile: key}
		if err := ts.Load(); err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(mustRead(t, tokFile)))
		id, err := ts.authorize(req, Write)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	first := load(keyFile)
	sum := sha256.Sum256([]byte(writeTok))
	if !strings.HasPrefix(first, "write:hmac-") || len(first) != len("write:hmac-")+12 {
		t.Fatalf("id %q, want write:hmac-<12 hex>", first)
	}
	if strings.Contains(first, hex.EncodeToString(sum[:3])) {
		t.Fatalf("id %q shows the token's SHA-256 (%x...)", first, sum[:4])
	}
	key, err := os.ReadFile(keyFile)
	if err != nil || len(key) != 32 {
		t.Fatalf("key file: %d bytes, %v", len(key), err)
	}
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode().Perm())
	}
	if again := load(keyFile); again != first {
		t.Fatalf("id changed across loads with the same key: %q -> %q", first, again)
	}
	if other := load(filepath.Join(dir, "other.key")); other == first {
		t.Fatal("two keys give the same id")
	}
	if mem := load(""); mem == first {
		t.Fatal("an in-memory key gives the file's id")
	}
	os.WriteFile(tokFile, []byte(writeTok+"-rotated"), 0o600)
	if rotated := load(keyFile); rotated == first {
		t.Fatal("a rotated token has the same id")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".token-id-key-") {
			t.Fatalf("temporary key file left behind: %s", e.Name())
		}
	}
	os.WriteFile(keyFile, []byte("short"), 0o600)
	if err := (&TokenSource{WriteFile: tokFile, IDKeyFile: keyFile}).Load(); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("a damaged key file: %v", err)
	}
}

func mustRead(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func newCSRFServer(t *testing.T) (*Server, *store.Store) {
	t.Helper()
	srv, st, _ := newTestServer(t)
	if _, _, err := st.Put(stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"keep:1"}}, store.Match{}); err != nil {
		t.Fatal(err)
	}
	return srv, st
}

func merge(maps ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
