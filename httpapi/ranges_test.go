package httpapi

import (
	"encoding/json"
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
		{"string single port", `{"listen":"10000","backend":"a:1"}`, 10000, 10000, 0, ""},
		{"body and URL disagree", `{"listen":"10000-10050","backend":"a:1"}`, 10000, 10099, 0, "the URL says 10000-10099"},
		{"listen and listen_end disagree", `{"listen":"10000-10050","listen_end":10060,"backend":"a:1"}`, 10000, 10000, 0, "listen says"},
		{"bad range text", `{"listen":"10050-10000","backend":"a:1"}`, 10000, 10000, 0, "lower port"},
		{"listen neither number nor string", `{"listen":[1],"backend":"a:1"}`, 10000, 10000, 0, "range such as"},
		{"first port not the URL's", `{"listen":"10001-10099","backend":"a:1"}`, 10000, 10000, 0, "URL says 10000"},
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

// Until the daemon serves ranges end to end, a write of one is a 400
// that says so, and nothing is stored.
func TestRangeWriteRefusedUntilServed(t *testing.T) {
	srv, st, _ := newTestServer(t)
	rec, _ := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002-9004", body: `{"backend":"10.0.0.5","port_mode":"same"}`})
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "not supported yet") {
		t.Errorf("PUT of a range: %d %s", rec.Code, rec.Body)
	}
	if _, err := st.Get(stream.ID{Protocol: stream.TCP, Port: 9002}); err == nil {
		t.Error("stored")
	}
}

// An import of a range is refused too until ranges are served.
func TestRangeImportRefusedUntilServed(t *testing.T) {
	srv, _, _ := newTestServer(t)
	rec, _ := do(t, srv, call{method: "POST", path: "/v1/import", body: `{"streams":[{"protocol":"tcp","listen":"9002-9004","backend":"10.0.0.1:1"}]}`})
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "not supported yet") {
		t.Errorf("import of a range: %d %s", rec.Code, rec.Body)
	}
}
