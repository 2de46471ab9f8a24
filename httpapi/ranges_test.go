package httpapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

func decodeSpec(t *testing.T, body string, port, urlEnd int) (stream.Spec, error) {
	t.Helper()
	var q specRequest
	if err := json.Unmarshal([]byte(body), &q); err != nil {
		return stream.Spec{}, jsonError(err)
	}
	return q.toSpec(stream.TCP, port, urlEnd)
}

// A range is asked for as "listen": "A-B", as listen and listen_end, or
// by the URL; the three must agree.
func TestDecodeRange(t *testing.T) {
	for _, tc := range []struct {
		name, body  string
		port, url   int
		wantEnd     int
		wantErrWord string
	}{
		{"string listen", `{"listen":"10000-10099","backend":"10.0.0.5"}`, 10000, 10000, 10099, ""},
		{"listen_end", `{"listen":10000,"listen_end":10099,"backend":"a:1"}`, 10000, 10000, 10099, ""},
		{"the URL's range", `{"backend":"a:1"}`, 10000, 10099, 10099, ""},
		{"body and URL agree", `{"listen":"10000-10099","backend":"a:1"}`, 10000, 10099, 10099, ""},
		{"string single port refused (a port is a number)", `{"listen":"10000","backend":"a:1"}`, 10000, 10000, 0, "a single port is a number"},
		{"body and URL disagree", `{"listen":"10000-10050","backend":"a:1"}`, 10000, 10099, 0, "the URL says 10000-10099"},
		{"listen and listen_end disagree", `{"listen":"10000-10050","listen_end":10060,"backend":"a:1"}`, 10000, 10000, 0, "listen says"},
		{"bad range text", `{"listen":"10050-10000","backend":"a:1"}`, 10000, 10000, 0, "lower port"},
		{"listen neither number nor string", `{"listen":[1],"backend":"a:1"}`, 10000, 10000, 0, "range such as"},
		{"first port not the URL's", `{"listen":"10001-10099","backend":"a:1"}`, 10000, 10000, 0, "URL says 10000"},
		{"range as GET shows it", `{"listen":10000,"listen_end":10099,"range":"10000-10099","backend":"a:1"}`, 10000, 10000, 10099, ""},
		{"range alone", `{"range":"10000-10099","backend":"a:1"}`, 10000, 10000, 10099, ""},
		{"range disagrees", `{"listen":10000,"listen_end":10099,"range":"10000-10098","backend":"a:1"}`, 10000, 10000, 0, "does not agree"},
		{"range elsewhere", `{"range":"10001-10099","backend":"a:1"}`, 10000, 10000, 0, "first port is 10000"},
	} {
		sp, err := decodeSpec(t, tc.body, tc.port, tc.url)
		if tc.wantErrWord != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrWord) {
				t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.wantErrWord)
			}
			continue
		}
		if err != nil || sp.ListenEnd != tc.wantEnd || sp.Listen != tc.port {
			t.Errorf("%s: %+v %v", tc.name, sp, err)
		}
	}
	var q specRequest
	if err := json.Unmarshal([]byte(`{"listen":"10000-10010","backend":"a:1"}`), &q); err != nil {
		t.Fatal(err)
	}
	if _, err := q.toSpec("", 0, 0); err == nil || !strings.Contains(err.Error(), "POST allocates") {
		t.Errorf("POST with a range: %v", err)
	}
}

// Export writes a range back as listen (a number) and listen_end.
func TestExportRange(t *testing.T) {
	q := exportSpec(stream.Spec{Protocol: stream.TCP, Listen: 10000, ListenEnd: 10099, PortMode: "same", Backends: []string{"10.0.0.5:10000"}})
	b, _ := json.Marshal(q)
	if !strings.Contains(string(b), `"listen":10000`) || !strings.Contains(string(b), `"listen_end":10099`) || !strings.Contains(string(b), `"port_mode":"same"`) {
		t.Errorf("export: %s", b)
	}
}

// A range is addressed as tcp/first-last or tcp/first; a port inside it
// names the range in its 404.
func TestRangeAddressing(t *testing.T) {
	srv, st, _ := newTestServer(t)
	if _, _, err := st.Put(stream.Spec{Protocol: stream.TCP, Listen: 9002, ListenEnd: 9004, PortMode: "same", Backends: []string{"10.0.0.5:9002"}}, store.Match{}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/streams/tcp/9002-9004", "/v1/streams/tcp/9002"} {
		rec, got := do(t, srv, call{method: "GET", path: path})
		if rec.Code != 200 || got["range"] != "9002-9004" || got["listen_end"] != float64(9004) || got["listen"] != float64(9002) || got["port_mode"] != "same" {
			t.Errorf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
	}
	for path, says := range map[string]string{
		"/v1/streams/tcp/9003":      "port 9003 is part of stream tcp/9002-9004",
		"/v1/streams/tcp/9002-9003": "stream tcp/9002 listens on 9002-9004",
		"/v1/streams/udp/9002-9004": "no stream udp/9002-9004",
	} {
		for _, m := range []string{"GET", "DELETE"} {
			rec, _ := do(t, srv, call{method: m, path: path})
			if rec.Code != 404 || !strings.Contains(rec.Body.String(), says) {
				t.Errorf("%s %s: %d %s, want 404 saying %q", m, path, rec.Code, rec.Body, says)
			}
		}
	}
	if _, err := st.Get(stream.ID{Protocol: stream.TCP, Port: 9002}); err != nil {
		t.Errorf("a DELETE naming the range wrongly removed it: %v", err)
	}
	rec, got := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9003", body: `{"backend":"10.0.0.1:1"}`})
	e, _ := got["error"].(map[string]any)
	if rec.Code != 409 || e["code"] != CodePortConflict || !strings.Contains(e["message"].(string), "port 9003 is taken by stream tcp/9002-9004") {
		t.Errorf("PUT inside the range: %d %s", rec.Code, rec.Body)
	}
	rec, got = do(t, srv, call{method: "POST", path: "/v1/import", body: `{"streams":[{"protocol":"tcp","listen":9004,"backend":"10.0.0.1:1"}]}`})
	e, _ = got["error"].(map[string]any)
	if rec.Code != 409 || e["code"] != CodePortConflict || !strings.Contains(e["message"].(string), "tcp/9002-9004") {
		t.Errorf("import inside the range: %d %s", rec.Code, rec.Body)
	}
	if _, err := st.Get(stream.ID{Protocol: stream.TCP, Port: 9003}); err == nil {
		t.Error("a stream inside the range was stored")
	}
}

// A range is written as "listen": "A-B" or by the URL, shown with
// listen, listen_end and range, and its GET answer PUT back changes
// nothing; an import takes one too.
func TestRangeWrite(t *testing.T) {
	srv, st, _ := newTestServer(t)
	rec, got := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002-9004", body: `{"backend":"10.0.0.5","port_mode":"same"}`})
	if rec.Code != 201 || got["range"] != "9002-9004" || got["id"] != "tcp/9002" {
		t.Fatalf("PUT of a range: %d %s", rec.Code, rec.Body)
	}
	before, _ := st.Get(stream.ID{Protocol: stream.TCP, Port: 9002})
	if before.ListenEnd != 9004 || before.PortMode != "same" || before.Backends[0] != "10.0.0.5:9002" {
		t.Errorf("stored %+v", before)
	}
	for _, f := range daemonFields {
		delete(got, f)
	}
	back, _ := json.Marshal(got)
	rec, _ = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002", body: string(back)})
	if rec.Code != 200 {
		t.Fatalf("PUT of the GET answer: %d %s\n%s", rec.Code, rec.Body, back)
	}
	if after, _ := st.Get(stream.ID{Protocol: stream.TCP, Port: 9002}); after.Revision != before.Revision {
		t.Errorf("the GET answer PUT back wrote a new revision: %+v", after)
	}
	rec, _ = do(t, srv, call{method: "POST", path: "/v1/import", body: `{"streams":[{"protocol":"tcp","listen":"9006-9007","backend":"10.0.0.1:1"}]}`})
	if rec.Code != 200 {
		t.Fatalf("import of a range: %d %s", rec.Code, rec.Body)
	}
	if sp, err := st.Get(stream.ID{Protocol: stream.TCP, Port: 9006}); err != nil || sp.ListenEnd != 9007 || sp.PortMode != "fixed" {
		t.Errorf("imported %+v %v", sp, err)
	}
	rec, _ = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9000-9009", body: `{"backend":"10.0.0.5:1"}`})
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "reserved") {
		t.Errorf("a range over the API's port: %d %s", rec.Code, rec.Body)
	}
}

// POST /v1/streams with "ports": N allocates a range on the first free
// run of N ports of PORT_RANGE (9000-9009 here: 9005 reserved, 9008 held
// by another process), as its dry run says; 409 no_free_port when no run
// fits.
func TestPostAllocatesRange(t *testing.T) {
	srv, st, _ := newTestServer(t)
	body := func(n int) string {
		return fmt.Sprintf(`{"ports": %d, "backend": "10.0.0.5", "port_mode": "same"}`, n)
	}
	rec, got := do(t, srv, call{method: "POST", path: "/v1/streams?dry_run=true", body: body(3)})
	if sm, _ := got["stream"].(map[string]any); rec.Code != 200 || sm["range"] != "9000-9002" {
		t.Fatalf("dry run: %d %s", rec.Code, rec.Body)
	}
	if st.Revision() != 0 {
		t.Fatalf("a dry run stored something: revision %d", st.Revision())
	}
	for _, tc := range []struct {
		n    int
		want string
	}{{3, "9000-9002"}, {3, ""}, {2, "9003-9004"}, {2, "9006-9007"}} { // "": 9003-9005 has 9005 (reserved), 9006-9008 has 9008 (held)
		if tc.want == "" {
			rec, got := do(t, srv, call{method: "POST", path: "/v1/streams", body: body(tc.n)})
			if code, _ := errorOf(got); rec.Code != 409 || code != CodeNoFreePort {
				t.Fatalf("POST %d ports with no run left: %d %s", tc.n, rec.Code, rec.Body)
			}
			continue
		}
		rec, got := do(t, srv, call{method: "POST", path: "/v1/streams", body: body(tc.n)})
		if rec.Code != 201 || got["range"] != tc.want || got["port_mode"] != "same" {
			t.Fatalf("POST %d ports: %d %s, want %s", tc.n, rec.Code, rec.Body, tc.want)
		}
	}
	rec, got = do(t, srv, call{method: "POST", path: "/v1/streams", body: body(2)})
	if code, _ := errorOf(got); rec.Code != 409 || code != CodeNoFreePort {
		t.Fatalf("POST with no run of 2 left: %d %s", rec.Code, rec.Body)
	}
	rec, got = do(t, srv, call{method: "POST", path: "/v1/streams", body: `{"ports": 1, "backend": "10.0.0.5:1"}`})
	if rec.Code != 201 || got["listen"] != float64(9009) || got["range"] != nil {
		t.Fatalf("POST of 1 port: %d %s, want tcp/9009", rec.Code, rec.Body)
	}
}

// "ports" out of 1..1000, beside listen, or on a PUT is a 400 naming the
// field; nothing is stored.
func TestPostRangeRefusals(t *testing.T) {
	srv, st, _ := newTestServer(t)
	for _, tc := range []struct{ method, path, body, field string }{
		{"POST", "/v1/streams", `{"ports": 0, "backend": "10.0.0.5", "port_mode": "same"}`, "ports"},
		{"POST", "/v1/streams", `{"ports": 1001, "backend": "10.0.0.5", "port_mode": "same"}`, "ports"},
		{"POST", "/v1/streams", `{"ports": "3", "backend": "10.0.0.5", "port_mode": "same"}`, "ports"},
		{"POST", "/v1/streams", `{"ports": 3, "listen": "9000-9002", "backend": "10.0.0.5", "port_mode": "same"}`, "listen"},
		{"POST", "/v1/streams", `{"ports": 3, "listen_end": 9002, "backend": "10.0.0.5", "port_mode": "same"}`, "listen_end"},
		{"PUT", "/v1/streams/tcp/9000-9002", `{"ports": 3, "backend": "10.0.0.5", "port_mode": "same"}`, "ports"},
	} {
		rec, got := do(t, srv, call{method: tc.method, path: tc.path, body: tc.body})
		if code, field := errorOf(got); rec.Code != 400 || field != tc.field {
			t.Errorf("%s %s: %d %s (code %s), want 400 on %s", tc.method, tc.body, rec.Code, rec.Body, code, tc.field)
		}
	}
	if st.Revision() != 0 {
		t.Fatalf("a refused POST stored something: revision %d", st.Revision())
	}
}
