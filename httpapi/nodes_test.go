package httpapi

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// fakeNodes is a node registry.
type fakeNodes struct {
	nodes []stream.NodeInfo
	err   error
}

func (f fakeNodes) Nodes(context.Context) ([]stream.NodeInfo, error) { return f.nodes, f.err }

// Without a registry (bbolt), GET /v1/nodes lists this node alone, with
// what its reconciler knows: nginx running, streams active and failed.
func TestNodesListsThisNodeWithoutARegistry(t *testing.T) {
	srv, _, ap := newTestServer(t)
	srv.cfg.NodeName, srv.cfg.APIAddress = "edge-1", "http://127.0.0.1:8080"
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`})
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"backend":"b:1"}`})
	ap.mu.Lock()
	ap.reject["b:1"] = "nginx says no" // b:1 fails from now on
	ap.mu.Unlock()
	rec, body := do(t, srv, call{method: "GET", path: "/v1/nodes"})
	if rec.Code != 200 {
		t.Fatalf("GET /v1/nodes: %d %v", rec.Code, body)
	}
	nodes := body["nodes"].([]any)
	if len(nodes) != 1 {
		t.Fatalf("nodes %v, want this node alone", nodes)
	}
	n := nodes[0].(map[string]any)
	want := map[string]any{"name": "edge-1", "api": "http://127.0.0.1:8080", "version": "test", "nginx_running": true,
		"streams": map[string]any{"active": float64(1), "failed": float64(1)}}
	for k, v := range want {
		if fmt.Sprint(n[k]) != fmt.Sprint(v) {
			t.Errorf("%s = %v, want %v", k, n[k], v)
		}
	}
	if na, _ := n["not_active"].([]any); len(na) != 1 || fmt.Sprint(na[0].(map[string]any)["id"]) != "tcp/9002" ||
		na[0].(map[string]any)["error"] != "nginx says no" {
		t.Errorf("not_active = %v, want tcp/9002 failed", n["not_active"])
	}
	if seen, err := time.Parse(time.RFC3339Nano, n["last_seen"].(string)); err != nil || time.Since(seen) > time.Minute {
		t.Errorf("last_seen %v: %v", n["last_seen"], err)
	}
}

// With a registry, GET /v1/nodes lists what it holds; a registry that
// cannot be read is a 503 with a JSON error.
func TestNodesFromTheRegistry(t *testing.T) {
	srv, _, _ := newTestServer(t)
	srv.cfg.Nodes = fakeNodes{nodes: []stream.NodeInfo{{Name: "edge-1", AppliedRevision: 7}, {Name: "edge-2", AppliedRevision: 9}}}
	rec, body := do(t, srv, call{method: "GET", path: "/v1/nodes"})
	nodes, _ := body["nodes"].([]any)
	if rec.Code != 200 || len(nodes) != 2 || nodes[1].(map[string]any)["name"] != "edge-2" ||
		nodes[1].(map[string]any)["applied_revision"] != float64(9) {
		t.Fatalf("GET /v1/nodes: %d %v", rec.Code, body)
	}
	srv.cfg.Nodes = fakeNodes{err: fmt.Errorf("list nodes: etcd: %w: %w", desired.ErrUnavailable, errors.New("context deadline exceeded"))}
	rec, body = do(t, srv, call{method: "GET", path: "/v1/nodes"})
	if e, _ := body["error"].(map[string]any); rec.Code != 503 || e["code"] != CodeStoreUnavailable {
		t.Fatalf("GET /v1/nodes with the registry down: %d %v", rec.Code, body)
	}
}

// GET /v1/nodes is authorised like a read: no token is a 401, the read
// token is enough.
func TestNodesNeedsAReadToken(t *testing.T) {
	srv := newAuthServer(t)
	if rec, _ := do(t, srv, call{method: "GET", path: "/v1/nodes"}); rec.Code != 401 {
		t.Fatalf("GET /v1/nodes without a token: %d, want 401", rec.Code)
	}
	rec, body := do(t, srv, call{method: "GET", path: "/v1/nodes", header: map[string]string{"Authorization": "Bearer " + readTok}})
	if rec.Code != 200 || len(body["nodes"].([]any)) != 1 {
		t.Fatalf("GET /v1/nodes with the read token: %d %v", rec.Code, body)
	}
}
