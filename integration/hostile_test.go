package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	hostileToken = "hostile-test-write-token-0123456789"
	hostileRead  = "hostile-test-read-token-0123456789"
)

// rawRequest sends bytes as they are (no client normalising the path or
// headers) and returns the status, 0 when the server closed the
// connection without answering, and the body.
func rawRequest(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		return 0, ""
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}

// TestHostileInputs throws hostile requests at the real API with a token
// set, and checks that each is refused with a 4xx and a JSON error (or the
// connection closed), that nothing changed: the store, nginx -t, and the
// traffic of the stream that was there before.
func TestHostileInputs(t *testing.T) {
	t.Parallel()
	d := newDaemonWithTokens(t, 4, hostileToken, hostileRead)
	d.start()
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	_, before := d.apiRaw("GET", "/v1/streams", "")
	revision := func() float64 {
		_, m := d.api("GET", "/v1/status", "")
		return m["store_revision"].(float64)
	}
	rev0 := revision()
	addr := "127.0.0.1:" + strconv.Itoa(d.apiPort)
	p := d.portMin + 1
	auth := "Authorization: Bearer " + hostileToken + "\r\n"
	put := func(path, body string) string {
		return fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", path, addr, auth, len(body), body)
	}
	putBackend := func(field, value string) string {
		return put(fmt.Sprintf("/v1/streams/tcp/%d", p), fmt.Sprintf(`{"backend":"%s","%s":%s}`, be.addr(), field, value))
	}
	get := func(path, headers string) string {
		return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n", path, addr, headers)
	}
	method := func(m, path string) string {
		return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n", m, path, addr, auth)
	}
	backend := func(b string) string {
		return put(fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":`+strconv.Quote(b)+`}`)
	}
	cases := []struct{ name, req string }{
		// Config injection through every field that reaches nginx.
		{"backend ;", backend("a:1;")},
		{"backend }", backend("a:1}")},
		{"backend {", backend("{a:1")},
		{"backend newline", backend("a:1\nserver { listen 1; }")},
		{"backend %0a", backend("a:1%0aserver")},
		{"backend #", backend("a#b:1")},
		{"backend $var", backend("$remote_addr:1")},
		{"backend quotes", backend(`"a":1`)},
		{"backend single quotes", backend(`'a':1`)},
		{"backend backslash", backend(`a\:1`)},
		{"backend include", backend("a:1; include /etc/passwd")},
		{"bind injection", putBackend("bind", `"127.0.0.1; include /etc/passwd"`)},
		{"allow injection", putBackend("allow", `["all; allow all"]`)},
		{"allow brace", putBackend("allow", `["10.0.0.0/8 }"]`)},
		{"balance injection", putBackend("balance", `"least_conn; hash $x"`)},
		{"timeout injection", putBackend("connect_timeout", `"1s; proxy_pass evil:1"`)},
		{"protocol injection", putBackend("protocol", `"tcp; include x"`)},
		// Unicode look-alikes, NUL, control characters.
		{"cyrillic look-alike", backend("bаckend.example:1")},
		{"fullwidth colon", backend("a：1")},
		{"NUL", backend("a\x00b:1")},
		{"escape char", backend("a\x1b[31m:1")},
		{"emoji", backend("🙂.example:1")},
		// Sizes.
		{"host name of 300 characters", backend(strings.Repeat("a", 300) + ":1")},
		{"label of 64 characters", backend(strings.Repeat("a", 64) + ".example:1")},
		{"body of 100 KiB", put(fmt.Sprintf("/v1/streams/tcp/%d", p), `{"description":"`+strings.Repeat("x", 100<<10)+`"}`)},
		// Ports.
		{"port -1", put("/v1/streams/tcp/-1", `{"backend":"a:1"}`)},
		{"port 0", put("/v1/streams/tcp/0", `{"backend":"a:1"}`)},
		{"port 65536", put("/v1/streams/tcp/65536", `{"backend":"a:1"}`)},
		{"port 1e9", put("/v1/streams/tcp/1000000000", `{"backend":"a:1"}`)},
		{"port 1e9 literal", put("/v1/streams/tcp/1e9", `{"backend":"a:1"}`)},
		{"port 9000.5", put(fmt.Sprintf("/v1/streams/tcp/%d.5", p), `{"backend":"a:1"}`)},
		{"port hex", put("/v1/streams/tcp/0x2328", `{"backend":"a:1"}`)},
		{"body listen negative", put(fmt.Sprintf("/v1/streams/tcp/%d", p), `{"listen":-1,"backend":"a:1"}`)},
		{"body listen fraction", put(fmt.Sprintf("/v1/streams/tcp/%d", p), fmt.Sprintf(`{"listen":%d.5,"backend":"a:1"}`, p))},
		{"body listen string", put(fmt.Sprintf("/v1/streams/tcp/%d", p), fmt.Sprintf(`{"listen":"%d","backend":"a:1"}`, p))},
		{"backend port 65536", backend("a:65536")},
		// Path traversal and odd paths.
		{"traversal %2f", put("/v1/streams/tcp/..%2f..", `{"backend":"a:1"}`)},
		{"traversal dots", put("/v1/streams/../../etc/passwd", `{"backend":"a:1"}`)},
		{"encoded dots", put("/v1/streams/tcp/%2e%2e", `{"backend":"a:1"}`)},
		{"encoded NUL in path", put(fmt.Sprintf("/v1/streams/tcp/%d%%00", p), `{"backend":"a:1"}`)},
		// Method confusion.
		{"PATCH", method("PATCH", fmt.Sprintf("/v1/streams/tcp/%d", p))},
		{"TRACE", method("TRACE", "/v1/streams")},
		{"POST on a stream", method("POST", fmt.Sprintf("/v1/streams/tcp/%d", p))},
		{"DELETE on the collection", method("DELETE", "/v1/streams")},
		{"PUT on healthz", method("PUT", "/healthz")},
		{"OPTIONS (CORS preflight)", method("OPTIONS", "/v1/streams")},
		// Authorization.
		{"no Authorization", strings.Replace(backend("a:1"), auth, "", 1)},
		{"duplicate Authorization", strings.Replace(backend("a:1"), auth, auth+auth, 1)},
		{"garbage Authorization", strings.Replace(backend("a:1"), auth, "Authorization: Bearer\r\n", 1)},
		{"Basic Authorization", strings.Replace(backend("a:1"), auth, "Authorization: Basic YWRtaW46YWRtaW4=\r\n", 1)},
		{"wrong token", strings.Replace(backend("a:1"), hostileToken, hostileToken+"x", 1)},
		{"read token writing", strings.Replace(backend("a:1"), hostileToken, hostileRead, 1)},
		{"token in the query", get("/v1/streams?token="+hostileToken, "")},
		{"token in the query of a write", strings.Replace(backend("a:1"), fmt.Sprintf("/v1/streams/tcp/%d", p), fmt.Sprintf("/v1/streams/tcp/%d?access_token=%s", p, hostileToken), 1)},
		// Bodies.
		{"form body", strings.Replace(backend("a:1"), "application/json", "application/x-www-form-urlencoded", 1)},
		{"text body", strings.Replace(backend("a:1"), "application/json", "text/plain", 1)},
		{"trailing data", put(fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"a:1"}{"backend":"b:1"}`)},
		{"unknown field", put(fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"a:1","include":"/etc/passwd"}`)},
		// The original service's routes.
		{"seed ;", get(fmt.Sprintf("/createstream/%d/a;b:1", p), auth)},
		{"seed negative port", get("/createstream/-1/a:1", auth)},
		{"seed port text", get("/removestream/abc", auth)},
		{"seed traversal", get(fmt.Sprintf("/createstream/%d/..%%2f..", p), auth)},
		{"seed without token", get(fmt.Sprintf("/createstream/%d/%s", p, be.addr()), "")},
		// Open relay and loops.
		{"self-proxy", backend(fmt.Sprintf("127.0.0.1:%d", d.apiPort))},
		{"loop to a stream", backend(fmt.Sprintf("127.0.0.1:%d", d.portMin))},
		{"cloud metadata", backend("169.254.169.254:80")},
		{"IPv6 link-local", backend("[fe80::1]:80")},
		// DNS rebinding.
		{"foreign Host", strings.Replace(backend(be.addr()), "Host: "+addr, "Host: evil.example", 1)},
		{"foreign Origin", strings.Replace(backend(be.addr()), "Host: "+addr+"\r\n", "Host: "+addr+"\r\nOrigin: http://evil.example\r\n", 1)},
		// Names that a C resolver reads as numbers (the API, loopback,
		// the metadata address in disguise).
		{"hex address of the API", backend(fmt.Sprintf("0x7f000001:%d", d.apiPort))},
		{"hex dotted pair", backend("0x7f.0x1:80")},
		{"trailing hex part", backend("127.0.0.0x1:80")},
		{"hex zero", backend("0x0:80")},
		{"hex metadata address", backend("0xa9fea9fe:80")},
		{"octal address", backend("0177.0.0.1:80")},
		{"short address", backend("127.1:80")},
		{"decimal address", backend("2130706433:80")},
		// Writes a web page could make a browser send (CSRF): the seed
		// GET routes and every write, with the token a page never has
		// (these carry it, so only the cross-site headers refuse them).
		{"seed create from an <img>", get(fmt.Sprintf("/createstream/%d/%s", p, be.addr()), auth+"Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nReferer: http://evil.example/\r\n")},
		{"seed remove by a link", get(fmt.Sprintf("/removestream/%d", d.portMin), auth+"Referer: http://evil.example/page\r\n")},
		{"seed create from a same-site page", get(fmt.Sprintf("/createstream/%d/%s", p, be.addr()), auth+"Sec-Fetch-Site: same-site\r\n")},
		{"PUT from another site", strings.Replace(backend(be.addr()), "Host: "+addr+"\r\n", "Host: "+addr+"\r\nSec-Fetch-Site: cross-site\r\n", 1)},
	}
	tried, refused := 0, 0
	for _, tc := range cases {
		tried++
		code, body := rawRequest(t, addr, tc.req)
		if code < 400 || code >= 500 {
			t.Errorf("%s: status %d: %s", tc.name, code, body)
			continue
		}
		if !strings.Contains(body, `"error"`) && !strings.Contains(body, `"errors"`) {
			t.Errorf("%s: %d without a JSON error: %q", tc.name, code, body)
			continue
		}
		if r := revision(); r != rev0 {
			t.Fatalf("%s: the store changed (revision %v -> %v)", tc.name, rev0, r)
		}
		refused++
	}

	// Slowloris: headers that never end are cut off by ReadHeaderTimeout.
	tried++
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("GET /v1/streams HTTP/1.1\r\nHost: " + addr + "\r\n"))
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		buf := make([]byte, 1024)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 30; i++ { // at most 15 s of trickling
			select {
			case <-closed:
				return
			case <-tick.C:
				c.Write([]byte("X-Slow: y\r\n"))
			}
		}
	}()
	select {
	case <-closed:
		refused++
	case <-time.After(20 * time.Second):
		t.Error("slowloris: the connection was still open after 15 s of trickled headers")
	}
	c.Close()

	// 1,000 concurrent bad requests, 50 at a time.
	var mu sync.Mutex
	bad := 0
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			code, _ := rawRequest(t, addr, backend(fmt.Sprintf("bad;%d:1", i)))
			if code != 400 {
				mu.Lock()
				bad++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	tried++
	if bad > 0 {
		t.Errorf("%d of 1,000 concurrent bad requests were not answered 400", bad)
	} else {
		refused++
	}

	if _, after := d.apiRaw("GET", "/v1/streams", ""); string(after) != string(before) {
		t.Fatalf("the store changed:\n%s\n->\n%s", before, after)
	}
	if err := d.nginxTest(); err != nil {
		t.Fatalf("nginx -t after the hostile inputs: %v", err)
	}
	mustEcho(t, d.portMin, "A:")
	if strings.Contains(d.logs.String(), hostileToken) || strings.Contains(d.logs.String(), hostileRead) {
		t.Fatal("a token appears in the daemon's log")
	}
	changed := tried - refused
	t.Logf("hostile inputs: %d tried, %d refused, %d changed state", tried, refused, changed)
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
}

// bearer adds a token to every request of the harness's client.
// newDaemonWithTokens prepares a daemon that needs writeTok to write and
// readTok to read (API_TOKEN_FILE, API_READ_TOKEN_FILE), whose own client
// sends writeTok (a *bearer: change its token to act as another client).
func newDaemonWithTokens(t *testing.T, ports int, writeTok, readTok string, env ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	wf, rf := filepath.Join(dir, "token"), filepath.Join(dir, "read-token")
	for f, tok := range map[string]string{wf: writeTok, rf: readTok} {
		if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d := newDaemon(t, ports, append([]string{"API_TOKEN_FILE=" + wf, "API_READ_TOKEN_FILE=" + rf}, env...)...)
	d.client.Transport = &bearer{token: writeTok}
	return d
}

type bearer struct{ token string }

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}
