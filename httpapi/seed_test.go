package httpapi

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/policy"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// The seed routes take ?dry_run=true: they answer what they would change,
// in their own shape plus the dry-run detail of the v1 routes, and change
// nothing; refusals keep the seed error shape.
func TestSeedDryRunChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		path   string
		status int
		change string // "" for a refusal
		config string // in the rendered config
		diff   string // in the diff
	}{
		{"create", "/createstream/9001/a:1?dry_run=true", 200, "create", "# backend a:1\n    proxy_pass 192.0.2.1:1;", "+    # backend a:1"},
		{"create with dry_run=1", "/createstream/9001/a:1?dry_run=1", 200, "create", "# backend a:1\n    proxy_pass 192.0.2.1:1;", "+    # backend a:1"},
		{"replace", "/createstream/9000/b:2?dry_run=true", 200, "update", "# backend b:2\n    proxy_pass 192.0.2.1:2;", "-    # backend keep:1\n-    proxy_pass 192.0.2.1:1;\n+    # backend b:2\n+    proxy_pass 192.0.2.1:2;"},
		{"same again", "/createstream/9000/keep:1?dry_run=true", 200, "none", "# backend keep:1", " "},
		{"remove", "/removestream/9000?dry_run=true", 200, "delete", "", "-    # backend keep:1"},
		{"create, bad backend", "/createstream/9001/a%3B:1?dry_run=true", 400, "", "", ""},
		{"create, port outside the range", "/createstream/9010/a:1?dry_run=true", 400, "", "", ""},
		{"create, backend is the API", "/createstream/9001/127.0.0.1:9005?dry_run=true", 403, "", "", ""},
		{"remove, no such stream", "/removestream/9003?dry_run=true", 404, "", "", ""},
		{"remove, bad port", "/removestream/0?dry_run=true", 400, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, st, ap := newTestServerWith(t, &policy.Backends{APIPort: 9005, PortMin: 9000, PortMax: 9009, LocalAddrs: func() []netip.Addr { return nil }})
			if _, _, err := st.Put(stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"keep:1"}}, store.Match{}); err != nil {
				t.Fatal(err)
			}
			_, onDisk, _, err := ap.Preview(stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"keep:1"}})
			if err != nil {
				t.Fatal(err)
			}
			ap.onDisk = map[string][]byte{"stream-tcp-9000.conf": onDisk}
			rev := st.Revision()
			rec, body := do(t, srv, call{method: "GET", path: tc.path})
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if st.Revision() != rev {
				t.Fatalf("a dry run changed the store: revision %d -> %d", rev, st.Revision())
			}
			errs, isList := body["errors"].([]any)
			if tc.change == "" {
				if body["result"] != "error" || len(errs) != 1 || body["dry_run"] != nil {
					t.Fatalf("refusal not in the seed shape: %s", rec.Body)
				}
				return
			}
			if body["result"] != "ok" || !isList || len(errs) != 0 || body["dry_run"] != true || body["change"] != tc.change {
				t.Fatalf("answer %s", rec.Body)
			}
			if !strings.Contains(body["config"].(string), tc.config) || !strings.Contains(body["diff"].(string), tc.diff) {
				t.Fatalf("config or diff: %s", rec.Body)
			}
			if sm, _ := body["stream"].(map[string]any); sm["id"] == nil || !strings.HasPrefix(body["file"].(string), "stream-tcp-") {
				t.Fatalf("stream or file missing: %s", rec.Body)
			}
		})
	}
}

// A seed dry run's answer is documented in openapi.json.
func TestSeedDryRunIsDocumented(t *testing.T) {
	srv, _, _ := newTestServer(t)
	doc := loadOpenAPI(t)
	props := doc.Components.Schemas["SeedResult"].Properties
	do(t, srv, call{method: "GET", path: "/createstream/9002/b:2"})
	for _, path := range []string{"/createstream/9001/a:1?dry_run=true", "/removestream/9002?dry_run=true"} {
		rec, body := do(t, srv, call{method: "GET", path: path})
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		for k := range body {
			if _, ok := props[k]; !ok {
				t.Errorf("%s: SeedResult does not document %q", path, k)
			}
		}
	}
	for _, route := range []string{"/createstream/{port}/{backend}", "/removestream/{port}"} {
		op := string(doc.Paths[route]["get"])
		if !strings.Contains(op, `"dry_run"`) || !strings.Contains(op, `"403"`) {
			t.Errorf("openapi.json: GET %s documents no dry_run or no 403", route)
		}
	}
}

// seedWithRange is a test server with tcp/9000 to keep:1 and the range
// tcp/9001-9003 (port_mode same) stored.
func seedWithRange(t *testing.T) (*Server, *store.Store) {
	t.Helper()
	srv, st, _ := newTestServer(t)
	for _, sp := range []stream.Spec{
		{Protocol: stream.TCP, Listen: 9000, Backends: []string{"keep:1"}},
		{Protocol: stream.TCP, Listen: 9001, ListenEnd: 9003, PortMode: stream.PortModeSame, Backends: []string{"10.0.0.5"}},
	} {
		if _, _, err := st.Put(sp, store.Match{}); err != nil {
			t.Fatal(err)
		}
	}
	return srv, st
}

// /getstreams lists a range once, with its range; a single port's entry
// keeps the original's bytes.
func TestSeedGetStreamsRange(t *testing.T) {
	srv, _ := seedWithRange(t)
	rec, _ := do(t, srv, call{method: "GET", path: "/getstreams"})
	want := `[
  {
    "listen": 9000,
    "proxy_pass": "keep:1"
  },
  {
    "listen": 9001,
    "proxy_pass": "10.0.0.5",
    "listen_end": 9003,
    "range": "9001-9003",
    "port_mode": "same"
  }
]
`
	if rec.Code != 200 || rec.Body.String() != want {
		t.Fatalf("/getstreams: %d\n%s\nwant\n%s", rec.Code, rec.Body, want)
	}
}

// /hasstream answers true for every port of a range, its first and the
// ones inside.
func TestSeedHasStreamInRange(t *testing.T) {
	srv, _ := seedWithRange(t)
	for port, want := range map[string]string{"9000": "true", "9001": "true", "9002": "true", "9003": "true", "9004": "false"} {
		rec, body := do(t, srv, call{method: "GET", path: "/hasstream/" + port})
		if rec.Code != 200 || body["result"] != want {
			t.Errorf("/hasstream/%s: %d %s, want %s", port, rec.Code, rec.Body, want)
		}
	}
}

// /removestream and /createstream on a port of a range (its first too)
// refuse with 409 naming the range, and change nothing, dry run or not.
func TestSeedRemoveInRangeRefused(t *testing.T) {
	srv, st := seedWithRange(t)
	rev := st.Revision()
	for _, path := range []string{"/removestream/9002", "/removestream/9001", "/removestream/9003?dry_run=true",
		"/createstream/9001/a:1", "/createstream/9002/a:1?dry_run=true"} {
		rec, body := do(t, srv, call{method: "GET", path: path})
		errs, _ := body["errors"].([]any)
		if rec.Code != 409 || body["result"] != "error" || len(errs) != 1 || !strings.Contains(errs[0].(string), "part of stream tcp/9001-9003") {
			t.Errorf("%s: %d %s, want 409 naming tcp/9001-9003", path, rec.Code, rec.Body)
		}
	}
	if st.Revision() != rev {
		t.Fatalf("a refused seed route changed the store: revision %d -> %d", rev, st.Revision())
	}
	if sp, err := st.Get(stream.ID{Protocol: stream.TCP, Port: 9001}); err != nil || sp.ListenEnd != 9003 {
		t.Fatalf("the range is not intact: %+v %v", sp, err)
	}
}

// /getfreeport never answers a port inside a range, and /status does
// not count a range's ports as available.
func TestSeedFreePortSkipsRange(t *testing.T) {
	srv, _ := seedWithRange(t)
	rec, body := do(t, srv, call{method: "GET", path: "/getfreeport"})
	if rec.Code != 200 || body["port"] != float64(9004) {
		t.Fatalf("/getfreeport: %d %s, want 9004 (9001-9003 is a range)", rec.Code, rec.Body)
	}
	// 9000-9009: 9000 and 9001-9003 streams, 9005 reserved, 9008 held.
	rec, body = do(t, srv, call{method: "GET", path: "/status"})
	if rec.Code != 200 || body["available_ports"] != float64(4) {
		t.Fatalf("/status: %d %s, want 4 available ports", rec.Code, rec.Body)
	}
}
