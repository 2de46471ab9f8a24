package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// rangeAnswer is the API's answer for the range tcp/10000-10099.
const rangeAnswer = `{"id":"tcp/10000","protocol":"tcp","listen":10000,"listen_end":10099,"range":"10000-10099","port_mode":"same","backends":["10.0.0.5"],"status":{"state":"active"}}`

// runAgainst runs subcommand name with args against a fake API that
// answers every request with answer, and returns the exit code, the
// requests it got ("METHOD /path"), and stdout with stderr.
func runAgainst(t *testing.T, answer, name string, args ...string) (int, []string, string) {
	t.Helper()
	var reqs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		reqs = append(reqs, r.Method+" "+r.URL.RequestURI())
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	env := map[string]string{"STREAM_CONDUCTOR_URL": srv.URL}
	code := runClient(name, args, func(k string) string { return env[k] }, &out, &errOut)
	return code, reqs, errOut.String() + out.String()
}

// create, get and rm take a range (tcp/10000-10099, or 10000-10099 for
// TCP) and send it in the URL as the API addresses it.
func TestClientAddressesRange(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"get", []string{"tcp/10000-10099"}, "GET /v1/streams/tcp/10000-10099"},
		{"get", []string{"10000-10099"}, "GET /v1/streams/tcp/10000-10099"},
		{"get", []string{"udp/10000-10099"}, "GET /v1/streams/udp/10000-10099"},
		{"rm", []string{"tcp/10000-10099"}, "DELETE /v1/streams/tcp/10000-10099"},
		{"create", []string{"tcp/10000-10099", "10.0.0.5", "-same-port"}, "PUT /v1/streams/tcp/10000-10099"},
	} {
		code, reqs, out := runAgainst(t, rangeAnswer, tc.name, tc.args...)
		if code != exitOK || len(reqs) != 1 || reqs[0] != tc.want {
			t.Errorf("%s %v: exit %d, sent %q, want %q: %s", tc.name, tc.args, code, reqs, tc.want, out)
		}
	}
}

// A reference the API would refuse is a usage error, and nothing is
// sent.
func TestClientRefusesBadRange(t *testing.T) {
	for _, arg := range []string{"tcp/10099-10000", "tcp/10000-10000", "tcp/10000-", "tcp/1-2-3", "sctp/10000-10099", "tcp/0-5", "tcp/10000-70000"} {
		for _, name := range []string{"get", "rm"} {
			code, reqs, out := runAgainst(t, rangeAnswer, name, arg)
			if code != exitUsage || len(reqs) != 0 {
				t.Errorf("%s %s: exit %d, sent %q, want a usage error: %s", name, arg, code, reqs, out)
			}
		}
	}
}

// create -same-port sends port_mode same with the backend host, and the
// table shows the range in LISTEN.
func TestCreateRangeSamePort(t *testing.T) {
	code, req, body, out := createRequest(t, "tcp/10000-10099", "10.0.0.5", "-same-port")
	if code != exitOK || req != "PUT /v1/streams/tcp/10000-10099" {
		t.Fatalf("exit %d, %s: %s", code, req, out)
	}
	if want := map[string]any{"backends": []any{"10.0.0.5"}, "port_mode": "same"}; !reflect.DeepEqual(body, want) {
		t.Fatalf("body %v\nwant %v", body, want)
	}
	code, _, body, _ = createRequest(t, "tcp/10000-10099", "10.0.0.5:80")
	if code != exitOK || body["port_mode"] != nil {
		t.Fatalf("without -same-port: exit %d, body %v", code, body)
	}
}

// ls shows a range's ports in LISTEN, a single port's as before.
func TestLsShowsRange(t *testing.T) {
	var v []view
	if err := json.Unmarshal([]byte(`[`+rangeAnswer+`,{"id":"tcp/9000","listen":9000,"bind":"127.0.0.1","backends":["a:1"],"status":{"state":"active"}}]`), &v); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printStreams(&out, v)
	lines := strings.Split(out.String(), "\n")
	if len(lines) < 3 || !strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "tcp/10000 10000-10099 10.0.0.5 active") ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[2]), " "), "tcp/9000 127.0.0.1:9000 a:1 active") {
		t.Fatalf("ls:\n%s", out.String())
	}
}

// create auto -ports N asks POST /v1/streams for a range of N ports;
// -ports with a named stream is a usage error, nothing sent.
func TestCreateAutoRange(t *testing.T) {
	code, req, body, out := createRequest(t, "auto", "10.0.0.5", "-ports", "100", "-same-port")
	if code != exitOK || req != "POST /v1/streams" {
		t.Fatalf("exit %d, %s: %s", code, req, out)
	}
	if want := map[string]any{"backends": []any{"10.0.0.5"}, "port_mode": "same", "ports": float64(100)}; !reflect.DeepEqual(body, want) {
		t.Fatalf("body %v\nwant %v", body, want)
	}
	code, req, _, out = createRequest(t, "tcp/10000", "10.0.0.5", "-ports", "100")
	if code != exitUsage || req != " " {
		t.Fatalf("-ports with a named stream: exit %d, sent %q: %s", code, req, out)
	}
}
