package httpapi

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/streamconductor/stream-conductor/fleet"
	"github.com/streamconductor/stream-conductor/stream"
)

// A stream's nodes are stored sorted, without duplicates; a bad name is a
// 400 naming the field, and nothing is stored.
func TestStreamNodesField(t *testing.T) {
	srv, st, _ := newTestServer(t)
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1","nodes":["edge-2","edge-1","edge-2"]}`})
	if rec.Code != 201 || fmt.Sprint(body["nodes"]) != "[edge-1 edge-2]" {
		t.Fatalf("PUT with nodes: %d %v", rec.Code, body)
	}
	for _, bad := range []string{`["edge/1"]`, `[""]`, `["a b"]`, `"edge-1"`} {
		rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"backend":"a:1","nodes":` + bad + `}`})
		e, _ := body["error"].(map[string]any)
		if rec.Code != 400 || e["field"] != "nodes" {
			t.Errorf("nodes %s: %d %v", bad, rec.Code, body)
		}
	}
	if _, err := st.Get(stream.ID{Protocol: stream.TCP, Port: 9002}); err == nil {
		t.Error("a refused write was stored")
	}
	rec, body = do(t, srv, call{method: "POST", path: "/v1/streams", body: `{"protocol":"tcp","backend":"a:1","nodes":["edge-3"]}`})
	if rec.Code != 201 || fmt.Sprint(body["nodes"]) != "[edge-3]" {
		t.Fatalf("POST with nodes: %d %v", rec.Code, body)
	}
}

// /v1/status counts only the streams this node serves.
func TestStatusCountsOnlyThisNodesStreams(t *testing.T) {
	srv, _, _ := newTestServer(t)
	srv.cfg.NodeName = "edge-1"
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`})
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"backend":"a:1","nodes":["edge-2"]}`})
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9003", body: `{"backend":"a:1","nodes":["edge-1","edge-2"]}`})
	_, body := do(t, srv, call{method: "GET", path: "/v1/status"})
	if got := body["streams"].(map[string]any)["total"]; got != float64(2) {
		t.Fatalf("streams total %v, want 2 (tcp/9002 is edge-2's)", got)
	}
}

// fakeFleet shows every stream with one summary, which changes with its
// generation.
type fakeFleet struct {
	gen     atomic.Uint64
	lagging []string
}

func (f *fakeFleet) Of(sp stream.Spec) fleet.View {
	g := f.gen.Load()
	return fleet.View{Status: stream.Status{State: stream.Active, Revision: sp.Revision}, Summary: fmt.Sprintf("generation %d", g),
		OnNodes: []stream.OnNode{{Node: "edge-2", State: stream.Active, AppliedRevision: g}}}
}

func (f *fakeFleet) Lagging(uint64, []stream.Spec) []string { return f.lagging }
func (f *fakeFleet) Generation() uint64                     { return f.gen.Load() }

// A write not applied within APPLY_TIMEOUT says which nodes did not.
func TestApplyTimeoutNamesTheNodesThatDidNotApply(t *testing.T) {
	srv, _, ap := newTestServer(t)
	srv.cfg.Fleet = &fakeFleet{lagging: []string{"edge-3 (applied revision 4)"}}
	ap.mu.Lock()
	ap.hang = true
	ap.mu.Unlock()
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`})
	e, _ := body["error"].(map[string]any)
	if rec.Code != 503 || !strings.HasSuffix(fmt.Sprint(e["message"]), "not applied within 200ms by edge-3 (applied revision 4); it will be applied when nginx allows") {
		t.Fatalf("PUT: %d %v", rec.Code, body)
	}
}

// With a fleet, a stream's status is the fleet's, with each node; the
// cached list follows the other nodes' changes.
func TestStatusFromTheFleet(t *testing.T) {
	srv, _, _ := newTestServer(t)
	ff := &fakeFleet{}
	srv.cfg.Fleet = ff
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`})
	_, body := do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9001"})
	st := body["status"].(map[string]any)
	if st["summary"] != "generation 0" || len(st["on_nodes"].([]any)) != 1 {
		t.Fatalf("status %v", st)
	}
	do(t, srv, call{method: "GET", path: "/v1/streams"})
	ff.gen.Store(1)
	_, list := do(t, srv, call{method: "GET", path: "/v1/streams"})
	if got := list["streams"].([]any)[0].(map[string]any)["status"].(map[string]any)["summary"]; got != "generation 1" {
		t.Fatalf("the list after another node's change: %v", got)
	}
	check := loadOpenAPI(t).Components.Schemas["Status"].Properties
	for k := range st {
		if _, ok := check[k]; !ok {
			t.Errorf("status has undocumented %q", k)
		}
	}
}
