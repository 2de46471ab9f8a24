package httpapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

const limitsBody = `{"backend":"a:1","max_connections":100,"max_connections_per_client":4,"upload_rate":"512K","download_rate":"1m",` +
	`"allow":["10.0.0.0/8"],"deny":["10.1.2.3","192.0.2.0/24"]}`

// The limits and the deny list are accepted, stored in canonical form and
// shown as stored; what GET answers can be PUT back unchanged.
func TestLimits16PutShowsLimits(t *testing.T) {
	srv, st, _ := newTestServer(t)
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: limitsBody})
	if rec.Code != 201 {
		t.Fatalf("PUT: %d %s", rec.Code, rec.Body)
	}
	want := map[string]any{"max_connections": 100.0, "max_connections_per_client": 4.0, "upload_rate": "512k", "download_rate": "1m"}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("%s = %v, want %v", k, body[k], v)
		}
	}
	if d, _ := body["deny"].([]any); len(d) != 2 || d[0] != "10.1.2.3/32" || d[1] != "192.0.2.0/24" {
		t.Errorf("deny = %v", body["deny"])
	}
	sp, err := st.Get(stream.MustParseID("tcp/9001"))
	if err != nil || sp.MaxConnections != 100 || sp.UploadRate != "512k" || len(sp.Deny) != 2 {
		t.Fatalf("stored %+v, %v", sp, err)
	}
	_, got := do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9001"})
	rev := got["revision"]
	back := getAsBody(t, srv, "/v1/streams/tcp/9001")
	rec, again := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: back})
	if rec.Code != 200 || again["revision"] != rev {
		t.Fatalf("PUT of the GET answer: %d %s (revision %v, was %v)", rec.Code, rec.Body, again["revision"], rev)
	}
}

// getAsBody returns GET path's answer without the fields the API sets,
// as a body to PUT back.
func getAsBody(t *testing.T, srv *Server, path string) string {
	t.Helper()
	_, m := do(t, srv, call{method: "GET", path: path})
	for _, k := range []string{"id", "revision", "created_at", "updated_at", "status", "traffic", "health", "range"} {
		delete(m, k)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Hostile and wrong values of every new field are refused with 400 and a
// JSON error naming the field; nothing is stored, nothing rendered.
func TestLimits16HostileInputs(t *testing.T) {
	srv, st, ap := newTestServer(t)
	for _, tc := range []struct{ name, body, field string }{
		{"max_connections negative", `"max_connections":-1`, "max_connections"},
		{"max_connections beyond nginx", `"max_connections":65536`, "max_connections"},
		{"max_connections huge", `"max_connections":1e30`, "max_connections"},
		{"max_connections fraction", `"max_connections":1.5`, "max_connections"},
		{"max_connections string", `"max_connections":"10"`, "max_connections"},
		{"per client negative", `"max_connections_per_client":-2`, "max_connections_per_client"},
		{"per client overflow", `"max_connections_per_client":9223372036854775808`, "max_connections_per_client"},
		{"upload_rate number", `"upload_rate":1048576`, "upload_rate"},
		{"upload_rate injection", `"upload_rate":"1m; proxy_pass evil:1"`, "upload_rate"},
		{"upload_rate newline", `"upload_rate":"1m\n}"`, "upload_rate"},
		{"upload_rate variable", `"upload_rate":"$limit_rate"`, "upload_rate"},
		{"upload_rate zero", `"upload_rate":"0"`, "upload_rate"},
		{"download_rate unit g", `"download_rate":"1g"`, "download_rate"},
		{"download_rate 20 digits", `"download_rate":"99999999999999999999"`, "download_rate"},
		{"download_rate NUL", `"download_rate":"1\u0000m"`, "download_rate"},
		{"download_rate look-alike", `"download_rate":"１m"`, "download_rate"},
		{"download_rate huge", `"download_rate":"` + strings.Repeat("9", 5000) + `"`, "download_rate"},
		{"deny string", `"deny":"10.0.0.1"`, "deny"},
		{"deny all", `"deny":["all"]`, "deny"},
		{"deny injection", `"deny":["10.0.0.1; allow all"]`, "deny"},
		{"deny brace", `"deny":["10.0.0.0/8 }"]`, "deny"},
		{"deny name", `"deny":["evil.example"]`, "deny"},
		{"deny twice", `"deny":["10.0.0.1","10.0.0.1/32"]`, "deny"},
		{"deny covering allow", `"allow":["10.1.0.0/16"],"deny":["10.0.0.0/8"]`, "deny"},
		{"deny of 257", `"deny":[` + strings.TrimSuffix(strings.Repeat(`"10.0.0.1",`, 257), ",") + `]`, "deny"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"backend":"a:1",` + tc.body + `}`})
			code, field := errorOf(body)
			if rec.Code != 400 || (code != CodeInvalid && code != CodeMalformed) || field != tc.field && !(code == CodeMalformed && field == "") {
				t.Fatalf("%d %s: want 400 invalid on %s", rec.Code, rec.Body, tc.field)
			}
			if code == CodeMalformed {
				t.Errorf("malformed rather than invalid %s: %s", tc.field, rec.Body)
			}
		})
	}
	if l, _ := st.List(); len(l) != 0 {
		t.Fatalf("a refused write stored %v", l)
	}
	if len(ap.onDisk) != 0 {
		t.Fatalf("a refused write rendered %v", ap.onDisk)
	}
}

// Export lists the limits, import recreates the stream identically, and a
// dry run shows the directives it would render.
func TestLimits16ExportImportDryRun(t *testing.T) {
	srv, st, _ := newTestServer(t)
	rec, dry := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001?dry_run=true", body: limitsBody})
	if rec.Code != 200 {
		t.Fatalf("dry run: %d %s", rec.Code, rec.Body)
	}
	diff, _ := dry["diff"].(string)
	for _, want := range []string{"+limit_conn_zone tcp/9001 zone=", "+    limit_conn stream_conductor_tcp_9001_conns 100;",
		"+    limit_conn stream_conductor_tcp_9001_clients 4;", "+    proxy_upload_rate 512k;", "+    proxy_download_rate 1m;",
		"+    deny 10.1.2.3/32;\n+    deny 192.0.2.0/24;\n+    allow 10.0.0.0/8;\n+    deny all;"} {
		if !strings.Contains(diff, want) {
			t.Errorf("dry-run diff lacks %q:\n%s", want, diff)
		}
	}
	if shown, _ := dry["stream"].(map[string]any); shown["max_connections"] != 100.0 || shown["upload_rate"] != "512k" {
		t.Errorf("dry run shows %v", dry["stream"])
	}
	if l, _ := st.List(); len(l) != 0 {
		t.Fatal("a dry run stored the stream")
	}
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: limitsBody})
	rec, _ = do(t, srv, call{method: "GET", path: "/v1/export"})
	exported := rec.Body.String()
	var doc struct{ Streams []map[string]any }
	if err := json.Unmarshal([]byte(exported), &doc); err != nil || len(doc.Streams) != 1 {
		t.Fatalf("export: %v %s", err, exported)
	}
	e := doc.Streams[0]
	if e["max_connections"] != 100.0 || e["max_connections_per_client"] != 4.0 || e["upload_rate"] != "512k" ||
		e["download_rate"] != "1m" || len(e["deny"].([]any)) != 2 {
		t.Errorf("export lacks the limits: %v", e)
	}
	srv2, st2, _ := newTestServer(t)
	if rec, _ := do(t, srv2, call{method: "POST", path: "/v1/import", body: exported}); rec.Code != 200 {
		t.Fatalf("import: %d %s", rec.Code, rec.Body)
	}
	a, _ := st.List()
	b, _ := st2.List()
	if len(a) != 1 || len(b) != 1 || !a[0].SameDesired(b[0]) || b[0].MaxConnectionsPerClient != 4 {
		t.Fatalf("round trip differs:\n%+v\n%+v", a, b)
	}
}

// The document describes the limits where a stream is read and written,
// and the refusals where its traffic is: a stream with limits answers
// with no property the document lacks.
func TestLimits16OpenAPI(t *testing.T) {
	srv, _, _ := newTestServer(t)
	doc := loadOpenAPI(t)
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: limitsBody})
	_, got := do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9001"})
	for k := range got {
		if _, ok := doc.Components.Schemas["Stream"].Properties[k]; !ok {
			t.Errorf("Stream: answer has undocumented %q", k)
		}
	}
	for _, f := range []string{"max_connections", "max_connections_per_client", "upload_rate", "download_rate", "deny"} {
		for _, schema := range []string{"Stream", "StreamInput"} {
			if _, ok := doc.Components.Schemas[schema].Properties[f]; !ok {
				t.Errorf("%s lacks %s", schema, f)
			}
		}
		if _, ok := got[f]; !ok {
			t.Errorf("the answer lacks %s: %v", f, got)
		}
	}
	if _, ok := doc.Components.Schemas["Traffic"].Properties["refused"]; !ok {
		t.Error("Traffic lacks refused")
	}
}
