package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What a browser sends when a page of another site makes it fetch a URL
// with <img>, <a> or <form>, and variants of it; each must be refused.
var crossSiteVariants = []struct {
	name   string
	header map[string]string
}{
	{"img from another site", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image", "Referer": "http://evil.example/"}},
	{"link from another site", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Referer": "http://evil.example/page"}},
	{"only a Referer (no Sec-Fetch-*)", map[string]string{"Referer": "http://evil.example/"}},
	{"same site, another port", map[string]string{"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Referer": "http://127.0.0.1:1/"}},
	{"form post from another site", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Origin": "http://evil.example"}},
}

// browserGet sends GET path with the given headers (and no others the Go
// client would not send anyway) and decodes the JSON answer.
func (d *daemon) browserGet(path string, header map[string]string) (int, map[string]any) {
	d.t.Helper()
	return d.browserDo("GET", path, "", header)
}

func (d *daemon) browserDo(method, path, body string, header map[string]string) (int, map[string]any) {
	d.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, d.url(path), rd)
	if err != nil {
		d.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &m); err != nil {
			d.t.Fatalf("%s %s: answer is not JSON: %v\n%s", method, path, err, raw)
		}
	}
	return resp.StatusCode, m
}

// requireRefused requires that nothing listens on port now.
func requireRefused(t *testing.T, port int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("port %d accepts connections", port)
	}
}

// sameOrigin is what a page served by the API itself would send.
func (d *daemon) sameOrigin() map[string]string {
	return map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors", "Referer": d.url("/x")}
}

// With the default settings (loopback, no token), a page of another site
// can neither create nor remove a stream through the original service's
// GET routes; a page of the API's own origin, a URL typed in the address
// bar, curl and the CLI still can.
func TestSeedRoutesRefuseOtherSites(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "S:")
	kept, target := d.portMin, d.portMin+1
	if code, m := d.api("GET", fmt.Sprintf("/createstream/%d/%s", kept, be.addr()), ""); code != 200 || m["result"] != "ok" {
		t.Fatalf("curl-like createstream: %d %v", code, m)
	}
	mustEcho(t, kept, "S:")
	_, before := d.apiRaw("GET", "/v1/streams", "")

	for _, v := range crossSiteVariants {
		for _, path := range []string{
			fmt.Sprintf("/createstream/%d/%s", target, be.addr()),
			fmt.Sprintf("/removestream/%d", kept),
		} {
			code, m := d.browserGet(path, v.header)
			errs, _ := m["errors"].([]any)
			if code != 403 || m["result"] != "error" || len(errs) != 1 {
				t.Fatalf("%s: GET %s: %d %v, want 403 in the seed shape", v.name, path, code, m)
			}
		}
	}
	if _, after := d.apiRaw("GET", "/v1/streams", ""); !bytes.Equal(after, before) {
		t.Fatalf("refused requests changed the streams:\n%s\n->\n%s", before, after)
	}
	requireRefused(t, target)
	mustEcho(t, kept, "S:")

	// A page of the API's own origin.
	if code, m := d.browserGet(fmt.Sprintf("/createstream/%d/%s", target, be.addr()), d.sameOrigin()); code != 200 || m["result"] != "ok" {
		t.Fatalf("same-origin createstream: %d %v", code, m)
	}
	mustEcho(t, target, "S:")
	if code, m := d.browserGet(fmt.Sprintf("/removestream/%d", target), d.sameOrigin()); code != 200 || m["result"] != "ok" {
		t.Fatalf("same-origin removestream: %d %v", code, m)
	}
	waitRefused(t, target)
	// Typed in the address bar.
	typed := map[string]string{"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-User": "?1"}
	if code, m := d.browserGet(fmt.Sprintf("/createstream/%d/%s", target, be.addr()), typed); code != 200 || m["result"] != "ok" {
		t.Fatalf("createstream typed in the address bar: %d %v", code, m)
	}
	mustEcho(t, target, "S:")
	// curl.
	if code, m := d.api("GET", fmt.Sprintf("/removestream/%d", target), ""); code != 200 || m["result"] != "ok" {
		t.Fatalf("curl-like removestream: %d %v", code, m)
	}
	waitRefused(t, target)
	// The CLI.
	id := fmt.Sprintf("tcp/%d", target)
	if out, code := d.cliCode("create", id, be.addr()); code != 0 || !strings.Contains(out, "active") {
		t.Fatalf("CLI create: %d\n%s", code, out)
	}
	mustEcho(t, target, "S:")
	if out, code := d.cliCode("rm", id); code != 0 {
		t.Fatalf("CLI rm: %d\n%s", code, out)
	}
	waitRefused(t, target)
}

// With the API beyond loopback and no token (ALLOW_INSECURE_REMOTE), the
// Host check is off; a page of another site that POSTs a JSON body as a
// Blob (no Content-Type, so no preflight and no JSON content-type refusal)
// or that uses the seed routes is still refused.
func TestSecurityCrossSiteWritesBeyondLoopback(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2, "BIND_ADDRESS=0.0.0.0", "ALLOW_INSECURE_REMOTE=true")
	be := startEcho(t, "R:")
	body := `{"backend":"` + be.addr() + `"}`
	blob := map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Origin": "http://evil.example", "Referer": "http://evil.example/"}
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/streams", body},
		{"PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), body},
		{"POST", "/v1/import", fmt.Sprintf(`{"streams":[{"protocol":"tcp","listen":%d,"backends":["%s"]}]}`, d.portMin, be.addr())},
		{"GET", fmt.Sprintf("/createstream/%d/%s", d.portMin, be.addr()), ""},
	} {
		code, m := d.browserDo(tc.method, tc.path, tc.body, blob)
		if code != 403 {
			t.Fatalf("cross-site %s %s: %d %v, want 403", tc.method, tc.path, code, m)
		}
	}
	if _, m := d.api("GET", "/v1/streams", ""); len(m["streams"].([]any)) != 0 {
		t.Fatalf("a cross-site request created a stream: %v", m)
	}
	requireRefused(t, d.portMin)
	// The same body from a script goes through.
	code, m := d.browserDo("POST", "/v1/streams", body, nil)
	if code != 201 {
		t.Fatalf("POST from a script: %d %v", code, m)
	}
	mustEcho(t, int(m["listen"].(float64)), "R:")
}

// ?dry_run=true on the seed routes answers what would change and changes
// nothing.
func TestSeedDryRunEndToEnd(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEcho(t, "D:")
	_, before := d.apiRaw("GET", "/v1/streams", "")
	code, m := d.api("GET", fmt.Sprintf("/createstream/%d/%s?dry_run=true", d.portMin, be.addr()), "")
	if code != 200 || m["result"] != "ok" || m["dry_run"] != true || m["change"] != "create" ||
		!strings.Contains(fmt.Sprint(m["config"]), "proxy_pass "+be.addr()+";") {
		t.Fatalf("createstream dry run: %d %v", code, m)
	}
	if _, after := d.apiRaw("GET", "/v1/streams", ""); !bytes.Equal(after, before) {
		t.Fatalf("a dry run changed the streams:\n%s\n->\n%s", before, after)
	}
	if _, m = d.api("GET", fmt.Sprintf("/hasstream/%d", d.portMin), ""); m["result"] != "false" {
		t.Fatalf("/hasstream after a dry run: %v", m)
	}
	requireRefused(t, d.portMin)
	if code, m = d.api("GET", fmt.Sprintf("/createstream/%d/bad;backend?dry_run=true", d.portMin), ""); code != 400 || m["result"] != "error" {
		t.Fatalf("dry run of a bad backend: %d %v", code, m)
	}

	if code, m = d.api("GET", fmt.Sprintf("/createstream/%d/%s", d.portMin, be.addr()), ""); code != 200 {
		t.Fatalf("createstream: %d %v", code, m)
	}
	mustEcho(t, d.portMin, "D:")
	code, m = d.api("GET", fmt.Sprintf("/createstream/%d/%s?dry_run=true", d.portMin, be.addr()), "")
	if code != 200 || m["change"] != "none" {
		t.Fatalf("dry run of the same stream: %d %v", code, m)
	}
	_, before = d.apiRaw("GET", "/v1/streams", "")
	code, m = d.api("GET", fmt.Sprintf("/removestream/%d?dry_run=true", d.portMin), "")
	if code != 200 || m["result"] != "ok" || m["dry_run"] != true || m["change"] != "delete" ||
		!strings.Contains(fmt.Sprint(m["diff"]), "-    proxy_pass "+be.addr()+";") {
		t.Fatalf("removestream dry run: %d %v", code, m)
	}
	if _, after := d.apiRaw("GET", "/v1/streams", ""); !bytes.Equal(after, before) {
		t.Fatalf("a remove dry run changed the streams:\n%s\n->\n%s", before, after)
	}
	mustEcho(t, d.portMin, "D:")
	if code, m = d.api("GET", fmt.Sprintf("/removestream/%d?dry_run=true", d.portMax), ""); code != 404 || m["result"] != "error" {
		t.Fatalf("remove dry run of a missing stream: %d %v", code, m)
	}
}

// The audit log, which read-token holders see, names the token that
// wrote without revealing anything about it: no bits of its SHA-256 (an
// offline guessing oracle), but a keyed hash whose key stays in DATA_DIR,
// never in a backup; the id is stable across restarts and changes when
// the token is rotated.
func TestAuditTokenIDRevealsNothing(t *testing.T) {
	t.Parallel()
	const (
		writeTok = "audit-test-write-token-0123456789"
		readTok  = "audit-test-read-token-0123456789"
		rotated  = "audit-test-rotated-token-0123456789"
	)
	dir := t.TempDir()
	wf, rf := filepath.Join(dir, "token"), filepath.Join(dir, "read-token")
	os.WriteFile(wf, []byte(writeTok+"\n"), 0o600)
	os.WriteFile(rf, []byte(readTok+"\n"), 0o600)
	d := newDaemon(t, 2, "API_TOKEN_FILE="+wf, "API_READ_TOKEN_FILE="+rf)
	auth := &bearer{token: writeTok}
	d.client.Transport = auth
	d.start()
	be := startEcho(t, "T:")
	lastWriter := func() string {
		t.Helper()
		auth.token = readTok
		defer func() { auth.token = writeTok }()
		code, m := d.api("GET", "/v1/audit?limit=1", "")
		entries, _ := m["entries"].([]any)
		if code != 200 || len(entries) != 1 {
			t.Fatalf("/v1/audit with the read token: %d %v", code, m)
		}
		return entries[0].(map[string]any)["token"].(string)
	}
	leaks := func(id, token string) bool {
		sum := sha256.Sum256([]byte(token))
		return strings.Contains(id, hex.EncodeToString(sum[:3]))
	}

	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	first := lastWriter()
	if !strings.HasPrefix(first, "write:hmac-") || leaks(first, writeTok) {
		t.Fatalf("token id %q: want write:hmac-..., with no bits of the token's SHA-256", first)
	}
	keyFile := filepath.Join(d.dataDir, "token-id.key")
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("token id key: %v %v", fi, err)
	}
	key, _ := os.ReadFile(keyFile)
	if code, backup := d.apiRaw("GET", "/v1/backup", ""); code != 200 || bytes.Contains(backup, key) {
		t.Fatalf("the backup (%d) carries the token id key", code)
	}

	d.stop()
	d.start()
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
	if again := lastWriter(); again != first {
		t.Fatalf("the id of the same token changed across a restart: %q -> %q", first, again)
	}

	os.WriteFile(wf, []byte(rotated+"\n"), 0o600)
	d.cmd.Process.Signal(syscall.SIGHUP)
	auth.token = rotated
	eventually(t, "the rotated token accepted after SIGHUP", 10*time.Second, func() bool {
		code, _ := d.api("GET", "/v1/streams", "")
		return code == 200
	})
	auth.token = rotated
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`","description":"rotated"}`)
	auth.token = readTok
	code, m := d.api("GET", "/v1/audit?limit=1", "")
	auth.token = rotated
	second := m["entries"].([]any)[0].(map[string]any)["token"].(string)
	if code != 200 || second == first || !strings.HasPrefix(second, "write:hmac-") || leaks(second, rotated) {
		t.Fatalf("id of the rotated token %q (before %q)", second, first)
	}
	if strings.Contains(d.logs.String(), hex.EncodeToString(func() []byte { s := sha256.Sum256([]byte(writeTok)); return s[:4] }())) {
		t.Fatal("the daemon's log shows the token's SHA-256 prefix")
	}
}

// Hostile requests of the cross-site kind, sent as raw bytes to the real
// API with the default settings: each is refused with a 403 and a JSON
// error, and nothing changes (store, nginx -t, the stream that was there).
func TestHostileCrossSiteRequests(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "H:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	_, before := d.apiRaw("GET", "/v1/streams", "")
	addr := "127.0.0.1:" + strconv.Itoa(d.apiPort)
	p := d.portMin + 1
	create := fmt.Sprintf("/createstream/%d/%s", p, be.addr())
	remove := fmt.Sprintf("/removestream/%d", d.portMin)
	get := func(path, headers string) string {
		return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n", path, addr, headers)
	}
	send := func(method, path, headers, body string) string {
		return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s", method, path, addr, headers, len(body), body)
	}
	self := "http://" + addr
	spec := `{"backend":"` + be.addr() + `"}`
	cases := []struct{ name, req string }{
		{"img", get(create, "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: image\r\nReferer: http://evil.example/\r\n")},
		{"img remove", get(remove, "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nReferer: http://evil.example/\r\n")},
		{"img dry run", get(create+"?dry_run=true", "Sec-Fetch-Site: cross-site\r\n")},
		{"same-site", get(create, "Sec-Fetch-Site: same-site\r\n")},
		{"unknown Sec-Fetch-Site", get(create, "Sec-Fetch-Site: trusted\r\n")},
		{"upper-case Sec-Fetch-Site", get(create, "Sec-Fetch-Site: SAME-ORIGIN\r\n")},
		{"two Sec-Fetch-Site, the second cross-site", get(create, "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Site: cross-site\r\n")},
		{"same-origin Sec-Fetch-Site, foreign Referer", get(create, "Sec-Fetch-Site: same-origin\r\nReferer: http://evil.example/\r\n")},
		{"Referer only", get(create, "Referer: http://evil.example/\r\n")},
		{"Referer on another port", get(create, "Referer: http://127.0.0.1:1/\r\n")},
		{"Referer over https", get(create, "Referer: https://"+addr+"/\r\n")},
		{"Referer with user info", get(create, "Referer: http://"+addr+"@evil.example/\r\n")},
		{"Referer host as a prefix", get(create, "Referer: http://"+addr+".evil.example/\r\n")},
		{"Referer of localhost for 127.0.0.1", get(create, fmt.Sprintf("Referer: http://localhost:%d/\r\n", d.apiPort))},
		{"Referer not a URL", get(create, "Referer: ::::\r\n")},
		{"Referer relative", get(create, "Referer: /x\r\n")},
		{"two Referers, the second foreign", get(create, "Referer: "+self+"/\r\nReferer: http://evil.example/\r\n")},
		{"Origin null", get(create, "Origin: null\r\n")},
		{"Origin file", get(create, "Origin: file://\r\n")},
		{"Origin on another port", get(create, "Origin: http://127.0.0.1:1\r\n")},
		{"Blob POST", send("POST", "/v1/streams", "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nOrigin: http://127.0.0.1:1\r\n", spec)},
		{"Blob PUT, same-site", send("PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), "Sec-Fetch-Site: same-site\r\n", spec)},
		{"Blob import", send("POST", "/v1/import", "Sec-Fetch-Site: cross-site\r\n", fmt.Sprintf(`{"streams":[{"protocol":"tcp","listen":%d,"backends":["%s"]}]}`, p, be.addr()))},
		{"DELETE cross-site", send("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "Sec-Fetch-Site: cross-site\r\n", "")},
	}
	for _, tc := range cases {
		code, body := rawRequest(t, addr, tc.req)
		if code != 403 || (!strings.Contains(body, `"error"`) && !strings.Contains(body, `"errors"`)) {
			t.Errorf("%s: %d %s, want 403 with a JSON error", tc.name, code, body)
		}
	}
	if _, after := d.apiRaw("GET", "/v1/streams", ""); !bytes.Equal(after, before) {
		t.Fatalf("the store changed:\n%s\n->\n%s", before, after)
	}
	if err := d.nginxTest(); err != nil {
		t.Fatalf("nginx -t: %v", err)
	}
	requireRefused(t, p)
	mustEcho(t, d.portMin, "H:")
}
