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

	"github.com/streamconductor/stream-conductor/events"
)

// createRequest runs "create args..." against a fake API and returns the
// exit code, the method, path and JSON body it sent, and stderr.
func createRequest(t *testing.T, args ...string) (int, string, map[string]any, string) {
	t.Helper()
	var method, path string
	var body map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method, path = r.Method, r.URL.RequestURI()
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &body); err != nil {
			t.Errorf("body %s: %v", b, err)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"tcp/443","protocol":"tcp","listen":443,"routes":[{"server_name":"a"},{"server_name":"b"}],"status":{"state":"active"}}`)
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	env := map[string]string{"STREAM_CONDUCTOR_URL": srv.URL}
	code := runClient("create", args, func(k string) string { return env[k] }, &out, &errOut)
	return code, method + " " + path, body, errOut.String() + out.String()
}

func TestCreateWithRoutes(t *testing.T) {
	routes := []any{
		map[string]any{"server_name": "db.example.com", "backends": []any{"10.0.0.5:5432"}},
		map[string]any{"server_name": "*.example.org", "backends": []any{"10.0.0.6:443", "10.0.0.7:443"}},
	}
	for _, tc := range []struct {
		name string
		args []string
		want map[string]any
	}{
		{"default flag", []string{"tcp/443", "-route", "db.example.com=10.0.0.5:5432", "-route", "*.example.org=10.0.0.6:443,10.0.0.7:443", "-default", "10.0.0.9:443"},
			map[string]any{"routes": routes, "default": []any{"10.0.0.9:443"}}},
		{"default argument, flags after", []string{"tcp/443", "10.0.0.9:443,10.0.0.10:443", "-route", "db.example.com=10.0.0.5:5432", "-route=*.example.org=10.0.0.6:443,10.0.0.7:443", "-proxy-protocol"},
			map[string]any{"routes": routes, "default": []any{"10.0.0.9:443", "10.0.0.10:443"}, "proxy_protocol": true}},
		{"no default", []string{"tcp/443", "-", "-route", "db.example.com=10.0.0.5:5432", "-route", "*.example.org=10.0.0.6:443,10.0.0.7:443"},
			map[string]any{"routes": routes}},
		{"no BACKEND argument", []string{"-route", "db.example.com=10.0.0.5:5432", "tcp/443", "-route", "*.example.org=10.0.0.6:443,10.0.0.7:443"},
			map[string]any{"routes": routes}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, req, body, out := createRequest(t, tc.args...)
			if code != exitOK || req != "PUT /v1/streams/tcp/443" {
				t.Fatalf("exit %d, %s: %s", code, req, out)
			}
			if !reflect.DeepEqual(body, tc.want) {
				t.Fatalf("body %v\nwant %v", body, tc.want)
			}
			if !strings.Contains(out, "2 routes") {
				t.Errorf("the table does not count the routes: %s", out)
			}
		})
	}
}

func TestCreateRouteUsageErrors(t *testing.T) {
	for name, args := range map[string][]string{
		"no equals":              {"tcp/443", "-route", "db.example.com"},
		"no name":                {"tcp/443", "-route", "=10.0.0.5:1"},
		"no backend":             {"tcp/443", "-route", "a.example="},
		"default twice":          {"tcp/443", "10.0.0.9:1", "-route", "a=10.0.0.5:1", "-default", "10.0.0.8:1"},
		"default without routes": {"tcp/443", "10.0.0.9:1", "-default", "10.0.0.8:1"},
		"no backend, no routes":  {"tcp/443"},
		"dash without routes":    {"tcp/443", "-"},
	} {
		code, req, _, out := createRequest(t, args...)
		if code != exitUsage || req != " " {
			t.Errorf("%s: exit %d, sent %q: %s", name, code, req, out)
		}
	}
	// Without routes, create sends backends as before.
	code, _, body, out := createRequest(t, "tcp/9000", "a:1,b:2")
	if code != exitOK || !reflect.DeepEqual(body, map[string]any{"backends": []any{"a:1", "b:2"}}) {
		t.Fatalf("plain create: %d %v %s", code, body, out)
	}
}

func TestLsShowsRoutes(t *testing.T) {
	var out bytes.Buffer
	var v []view
	json.Unmarshal([]byte(`[{"id":"tcp/443","listen":443,"routes":[{"server_name":"a"},{"server_name":"b"},{"server_name":"c"}],"default":["10.0.0.9:443"],"status":{"state":"active"}},
		{"id":"tcp/8443","listen":8443,"routes":[{"server_name":"a"}],"status":{"state":"active"}},
		{"id":"tcp/9000","listen":9000,"backends":["a:1","b:2"],"status":{"state":"active"}}]`), &v)
	printStreams(&out, v)
	for _, want := range []string{"3 routes, default 10.0.0.9:443", "1 route ", "a:1,b:2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("ls lacks %q:\n%s", want, out.String())
		}
	}
}

// watch says a routed stream routes, rather than listing its default
// as if it were all its backends.
func TestWatchDescribesRoutedStream(t *testing.T) {
	data := `{"id":"tcp/443","revision":2,"spec":{"protocol":"tcp","listen":443,"backends":["10.0.0.9:443"],"routes":[{"server_name":"a","backends":["b:1"]},{"server_name":"c","backends":["d:1"]}]}}`
	got := describe(events.Event{Type: events.StreamUpdated, Data: json.RawMessage(data)})
	if len(got) != 1 || got[0] != "tcp/443 → 2 routes by server name, default 10.0.0.9:443 (revision 2)" {
		t.Fatalf("describe = %q", got)
	}
}

// create sends the limits and deny list it is given, and only those.
func TestLimits16CreateFlags(t *testing.T) {
	code, req, body, out := createRequest(t, "tcp/9000", "a:1", "-max-connections", "100", "-max-connections-per-client=4",
		"-upload-rate", "512k", "-download-rate", "1m", "-deny", "10.0.0.1,192.0.2.0/24", "-allow", "10.0.0.0/8", "-replace")
	want := map[string]any{"backends": []any{"a:1"}, "max_connections": 100.0, "max_connections_per_client": 4.0,
		"upload_rate": "512k", "download_rate": "1m", "deny": []any{"10.0.0.1", "192.0.2.0/24"}, "allow": []any{"10.0.0.0/8"}}
	if code != exitOK || req != "PUT /v1/streams/tcp/9000" || !reflect.DeepEqual(body, want) {
		t.Fatalf("exit %d, %s, body %v\nwant %v\n%s", code, req, body, want, out)
	}
	code, _, body, out = createRequest(t, "tcp/9000", "a:1", "-download-rate", "64k")
	if code != exitOK || !reflect.DeepEqual(body, map[string]any{"backends": []any{"a:1"}, "download_rate": "64k"}) {
		t.Fatalf("one limit: %d %v %s", code, body, out)
	}
}
