package httpapi

import (
	"strings"
	"testing"
)

func TestExportImportRoundTrip(t *testing.T) {
	srv, st, _ := newTestServer(t)
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backends":["a:1","b:2"],"balance":"least_conn","allow":["10.0.0.0/8"],"description":"x","nodes":["edge-1","edge-2"]}`})
	do(t, srv, call{method: "PUT", path: "/v1/streams/udp/9002", body: `{"backend":"dns:53","idle_timeout":"30s"}`})
	rec, _ := do(t, srv, call{method: "GET", path: "/v1/export"})
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "revision") || strings.Contains(rec.Body.String(), "status") {
		t.Fatalf("export: %d %s", rec.Code, rec.Body)
	}
	exported := rec.Body.String()

	// Import the export into an empty node: it creates both, identically.
	srv2, st2, _ := newTestServer(t)
	rec, body := do(t, srv2, call{method: "POST", path: "/v1/import?dry_run=true", body: exported})
	if rec.Code != 200 || len(body["changes"].(map[string]any)["create"].([]any)) != 2 {
		t.Fatalf("dry run: %s", rec.Body)
	}
	if l, _ := st2.List(); len(l) != 0 {
		t.Fatal("a dry run changed the store")
	}
	rec, _ = do(t, srv2, call{method: "POST", path: "/v1/import", body: exported})
	if rec.Code != 200 {
		t.Fatalf("import: %d %s", rec.Code, rec.Body)
	}
	a, _ := st.List()
	b, _ := st2.List()
	if len(a) != len(b) || !a[0].SameDesired(b[0]) || !a[1].SameDesired(b[1]) {
		t.Fatalf("round trip differs:\n%+v\n%+v", a, b)
	}
	// One bad stream refuses the whole import.
	bad := `{"streams":[{"protocol":"tcp","listen":9003,"backend":"ok:1"},{"protocol":"tcp","listen":9004,"backend":"bad;:1"}]}`
	rec, body = do(t, srv2, call{method: "POST", path: "/v1/import", body: bad})
	if code, field := errorOf(body); rec.Code != 400 || code != CodeInvalid || field != "streams[1].backends" {
		t.Fatalf("bad import: %d %s", rec.Code, rec.Body)
	}
	if l, _ := st2.List(); len(l) != 2 {
		t.Fatal("a refused import changed the store")
	}
	// prune deletes what the document does not name.
	rec, body = do(t, srv2, call{method: "POST", path: "/v1/import?prune=true", body: `{"streams":[{"protocol":"udp","listen":9002,"backend":"dns:53","idle_timeout":"30s"}]}`})
	ch := body["changes"].(map[string]any)
	if rec.Code != 200 || len(ch["delete"].([]any)) != 1 || len(ch["unchanged"].([]any)) != 1 {
		t.Fatalf("prune: %s", rec.Body)
	}
}
