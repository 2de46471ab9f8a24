package httpapi

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/policy"
	"github.com/streamconductor/stream-conductor/stream"
)

const routedBody = `{"routes":[
	{"server_name":"DB.Example.com.","backends":["10.0.0.5:5432"]},
	{"server_name":"*.example.org","backends":["10.0.0.6:443","10.0.0.7:443"],"balance":"least_conn"}],
	"default":"10.0.0.9:443","allow":["10.0.0.0/8"],"proxy_protocol":true,"connect_timeout":"5s",
	"idle_timeout":"10m","max_fails":3,"fail_timeout":"10s","description":"shared 443"}`

// daemonFields are the fields of a GET answer the daemon sets; the rest
// is what a client may PUT back.
var daemonFields = []string{"id", "status", "revision", "created_at", "updated_at", "traffic", "health"}

// A routed stream is shown with routes and default, never backends, and
// its GET answer (less the fields the daemon sets) PUT back changes
// nothing.
func TestRoutedStreamGetPutsBack(t *testing.T) {
	srv, st, _ := newTestServer(t)
	rec, _ := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: routedBody})
	if rec.Code != 201 && rec.Code != 200 {
		t.Fatalf("PUT: %d %s", rec.Code, rec.Body)
	}
	before, _ := st.Get(stream.ID{Protocol: stream.TCP, Port: 9001})
	rec, got := do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9001"})
	if rec.Code != 200 {
		t.Fatalf("GET: %d %s", rec.Code, rec.Body)
	}
	if _, ok := got["backends"]; ok {
		t.Errorf("a routed stream shows backends: %s", rec.Body)
	}
	if d, _ := json.Marshal(got["default"]); string(d) != `["10.0.0.9:443"]` {
		t.Errorf("default = %s", d)
	}
	var routes []stream.Route
	raw, _ := json.Marshal(got["routes"])
	json.Unmarshal(raw, &routes)
	want := []stream.Route{{ServerName: "db.example.com", Backends: []string{"10.0.0.5:5432"}},
		{ServerName: "*.example.org", Backends: []string{"10.0.0.6:443", "10.0.0.7:443"}, Balance: "least_conn"}}
	if !(stream.Spec{Routes: routes}).SameDesired(stream.Spec{Routes: want}) {
		t.Errorf("routes = %s", raw)
	}
	for _, f := range daemonFields {
		delete(got, f)
	}
	back, _ := json.Marshal(got)
	rec, _ = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: string(back)})
	if rec.Code != 200 {
		t.Fatalf("PUT of the GET answer: %d %s\n%s", rec.Code, rec.Body, back)
	}
	after, _ := st.Get(stream.ID{Protocol: stream.TCP, Port: 9001})
	if !after.SameDesired(before) {
		t.Fatalf("PUT back changed the stream:\n%+v\n%+v", before, after)
	}
	// The list shows it the same way.
	_, list := do(t, srv, call{method: "GET", path: "/v1/streams"})
	item := list["streams"].([]any)[0].(map[string]any)
	if _, ok := item["backends"]; ok || item["routes"] == nil {
		t.Errorf("list item: %v", item)
	}
	// Without a default: no default, and PUT back still round-trips.
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"routes":[{"server_name":"a.example","backends":["a:1"]}]}`})
	rec, got = do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9002"})
	if _, ok := got["default"]; ok || got["backends"] != nil || rec.Code != 200 {
		t.Fatalf("no default: %d %s", rec.Code, rec.Body)
	}
	// A stream without routes keeps its shape.
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9003", body: `{"backend":"a:1"}`})
	_, got = do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9003"})
	if _, ok := got["routes"]; ok || got["default"] != nil || got["backends"] == nil {
		t.Fatalf("a plain stream: %v", got)
	}
}

func TestRoutedStreamBadInput(t *testing.T) {
	srv, st, _ := newTestServerWith(t, &policy.Backends{APIPort: 9005, PortMin: 9000, PortMax: 9009})
	route := `"routes":[{"server_name":"a.example","backends":["a:1"]}]`
	for _, tc := range []struct {
		name, body, field string
		status            int
	}{
		{"backends with routes", `{` + route + `,"backends":["b:1"]}`, "backends", 400},
		{"backend with routes", `{` + route + `,"backend":"b:1"}`, "backends", 400},
		{"default without routes", `{"backend":"a:1","default":"b:1"}`, "default", 400},
		{"default of another type", `{` + route + `,"default":7}`, "default", 400},
		{"udp", `{"protocol":"udp",` + route + `}`, "routes", 400},
		{"hostile name", `{"routes":[{"server_name":"a.example","backends":["a:1"]},{"server_name":"a;}","backends":["a:1"]}]}`, "routes[1].server_name", 400},
		{"duplicate name", `{"routes":[{"server_name":"a.example","backends":["a:1"]},{"server_name":"A.EXAMPLE.","backends":["b:1"]}]}`, "routes[1].server_name", 400},
		{"unknown route field", `{"routes":[{"server_name":"a.example","backends":["a:1"],"alpn":"h2"}]}`, "alpn", 400},
		{"bad route backend", `{"routes":[{"server_name":"a.example","backends":["a b:1"]}]}`, "routes[0].backends", 400},
		{"route backend refused by policy", `{"routes":[{"server_name":"a.example","backends":["a:1"]},{"server_name":"b.example","backends":["127.0.0.1:9005"]}]}`, "routes[1].backends", 403},
		{"default refused by policy", `{` + route + `,"default":["169.254.169.254:80"]}`, "default", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/streams/tcp/9001"
			if strings.Contains(tc.body, "udp") {
				path = "/v1/streams/udp/9001"
			}
			rec, body := do(t, srv, call{method: "PUT", path: path, body: tc.body})
			if _, field := errorOf(body); rec.Code != tc.status || field != tc.field {
				t.Fatalf("%d %s, want %d in field %s", rec.Code, rec.Body, tc.status, tc.field)
			}
		})
	}
	if l, _ := st.List(); len(l) != 0 {
		t.Fatalf("refused streams were stored: %v", l)
	}
}

// A routed stream exports with routes and default, and the export
// imported into an empty node creates it identically.
func TestRoutedStreamExportImport(t *testing.T) {
	srv, st, _ := newTestServer(t)
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: routedBody})
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"routes":[{"server_name":"a.example","backends":["a:1"]}]}`})
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9003", body: `{"backends":["a:1","b:1"]}`})
	rec, _ := do(t, srv, call{method: "GET", path: "/v1/export"})
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"default"`) || !strings.Contains(rec.Body.String(), `"server_name"`) {
		t.Fatalf("export: %d %s", rec.Code, rec.Body)
	}
	srv2, st2, _ := newTestServer(t)
	rec, _ = do(t, srv2, call{method: "POST", path: "/v1/import", body: rec.Body.String()})
	if rec.Code != 200 {
		t.Fatalf("import: %d %s", rec.Code, rec.Body)
	}
	a, _ := st.List()
	b, _ := st2.List()
	if len(a) != 3 || len(b) != 3 || !slices.EqualFunc(a, b, stream.Spec.SameDesired) {
		t.Fatalf("round trip differs:\n%+v\n%+v", a, b)
	}
}

// A dry run shows the routed stream as GET would, and the file it would
// write routes by server name.
func TestRoutedStreamDryRun(t *testing.T) {
	srv, st, _ := newTestServer(t)
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001?dry_run=true", body: routedBody})
	if rec.Code != 200 {
		t.Fatalf("dry run: %d %s", rec.Code, rec.Body)
	}
	s := body["stream"].(map[string]any)
	if _, ok := s["backends"]; ok || s["default"] == nil || s["routes"] == nil {
		t.Errorf("dry run stream: %v", s)
	}
	if l, _ := st.List(); len(l) != 0 {
		t.Fatal("a dry run stored the stream")
	}
}
