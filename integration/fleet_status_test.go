package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fleetAddrs are the loopback addresses the three nodes serve streams on.
var fleetAddrs = [3]string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}

// startStatusFleet starts three nodes edge-1..3 on the shared cluster
// (fleetAddrs, ports streams ports) and waits until every node sees all
// three in its registry.
func startStatusFleet(t *testing.T, ports int) [3]*daemon {
	t.Helper()
	f := startFleet(t, sharedCluster(t), fleetOptions{ports: ports})
	ds := [3]*daemon{f.nodes[0], f.nodes[1], f.nodes[2]}
	for _, d := range ds {
		eventually(t, fmt.Sprintf("node :%d lists the three nodes", d.apiPort), 15*time.Second, func() bool {
			return len(nodesOf(d)) == 3
		})
	}
	return ds
}

// statusOf is the "status" object of a stream answer.
func statusOf(m map[string]any) map[string]any {
	st, _ := m["status"].(map[string]any)
	return st
}

// onNodes is a stream status's per-node states, by node name.
func onNodes(st map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	list, _ := st["on_nodes"].([]any)
	for _, n := range list {
		if n, ok := n.(map[string]any); ok {
			out[fmt.Sprint(n["node"])] = n
		}
	}
	return out
}

// at is addr:port.
func at(addr string, port int) string { return net.JoinHostPort(addr, strconv.Itoa(port)) }

// A PUT on edge-1 answers once all three nodes applied it: right after
// the answer, without polling, bytes flow through each node's address,
// and the status says active on 3 of 3. A stream with nodes ["edge-2"]
// is served on edge-2 alone (the others refuse its port) and its status
// shows that one node.
func TestFleetPutAnswersOnceEveryNodeApplied(t *testing.T) {
	ds := startStatusFleet(t, 2)
	be := startEcho(t, "f:")
	port := ds[0].portMin
	m := ds[0].mustPut("tcp", port, fmt.Sprintf(`{"backends":[%q]}`, be.addr()))
	for _, addr := range fleetAddrs {
		if got, err := echoAt(at(addr, port), "hi\n"); err != nil || got != "f:hi\n" {
			t.Errorf("right after the PUT's answer, %s: %q, %v", at(addr, port), got, err)
		}
	}
	st := statusOf(m)
	if st["summary"] != "active on 3 of 3 nodes" || len(onNodes(st)) != 3 {
		t.Errorf("PUT answered status %v, want active on 3 of 3 nodes", st)
	}
	for name, n := range onNodes(st) {
		if n["state"] != "active" || n["applied_revision"].(float64) < m["revision"].(float64) {
			t.Errorf("%s in the answer: %v", name, n)
		}
	}

	only := ds[0].portMax
	m = ds[0].mustPut("tcp", only, fmt.Sprintf(`{"backends":[%q],"nodes":["edge-2"]}`, be.addr()))
	if got, err := echoAt(at(fleetAddrs[1], only), "two\n"); err != nil || got != "f:two\n" {
		t.Errorf("right after the PUT's answer, edge-2 %s: %q, %v", at(fleetAddrs[1], only), got, err)
	}
	for _, addr := range []string{fleetAddrs[0], fleetAddrs[2]} {
		if c, err := net.DialTimeout("tcp", at(addr, only), time.Second); err == nil {
			c.Close()
			t.Errorf("%s accepts a connection: only edge-2 serves the stream", at(addr, only))
		}
	}
	st = statusOf(m)
	nodes := onNodes(st)
	if st["state"] != "active" || st["summary"] != "active on 1 of 1 nodes" || len(nodes) != 1 || nodes["edge-2"]["state"] != "active" {
		t.Errorf("a stream of edge-2 alone answered status %v", st)
	}
	if got := fmt.Sprint(m["nodes"]); got != "[edge-2]" {
		t.Errorf("nodes = %s, want [edge-2]", got)
	}
}

// A stream whose port another process holds on edge-2's address fails
// there only: the PUT keeps it (no 422, nothing undone), answers failed,
// active on 2 of 3, with edge-2's nginx message; bytes flow through
// edge-1 and edge-3; GET on edge-3 shows the same.
func TestFleetStreamFailingOnOneNode(t *testing.T) {
	ds := startStatusFleet(t, 1)
	be := startEcho(t, "g:")
	port := ds[0].portMin
	squatter, err := net.Listen("tcp", at(fleetAddrs[1], port))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()

	code, m := ds[0].api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", port), fmt.Sprintf(`{"backends":[%q]}`, be.addr()))
	if code != 201 {
		t.Fatalf("PUT: %d %v, want 201: refused on one node of three is kept", code, m)
	}
	check := func(where string, st map[string]any) {
		t.Helper()
		nodes := onNodes(st)
		msg, _ := nodes["edge-2"]["error"].(string)
		if st["state"] != "failed" || st["summary"] != "active on 2 of 3 nodes" || nodes["edge-1"]["state"] != "active" ||
			nodes["edge-3"]["state"] != "active" || nodes["edge-2"]["state"] != "failed" ||
			!strings.Contains(msg, at(fleetAddrs[1], port)) || !strings.Contains(msg, "Address already in use") {
			t.Errorf("%s: status %v", where, st)
		}
	}
	check("the PUT's answer", statusOf(m))
	for _, addr := range []string{fleetAddrs[0], fleetAddrs[2]} {
		if got, err := echoAt(at(addr, port), "x\n"); err != nil || got != "g:x\n" {
			t.Errorf("%s: %q, %v", at(addr, port), got, err)
		}
	}
	path := fmt.Sprintf("/v1/streams/tcp/%d", port)
	eventually(t, "GET on edge-3 shows edge-2 failed", 5*time.Second, func() bool {
		_, g := ds[2].api("GET", path, "")
		return statusOf(g)["summary"] == "active on 2 of 3 nodes"
	})
	_, g := ds[2].api("GET", path, "")
	check("GET on edge-3", statusOf(g))
	_, list := ds[2].api("GET", "/v1/streams", "")
	if streams, _ := list["streams"].([]any); len(streams) != 1 {
		t.Fatalf("list on edge-3: %v", list)
	} else {
		check("the list on edge-3", statusOf(streams[0].(map[string]any)))
	}
}

// A node killed with SIGKILL leaves GET /v1/nodes on the others once its
// lease expires; a write afterwards answers without waiting for it, and
// the streams' status says it is gone; a stream of that node alone is
// stored, not served, and says so.
func TestFleetNodeKilled(t *testing.T) {
	ds := startStatusFleet(t, 3) // NODE_TTL is fleetNodeTTL, 2s
	be := startEcho(t, "k:")
	first := ds[0].portMin
	ds[0].mustPut("tcp", first, fmt.Sprintf(`{"backends":[%q]}`, be.addr()))

	ds[2].kill9()
	killed := time.Now()
	for _, d := range ds[:2] {
		eventually(t, fmt.Sprintf("GET /v1/nodes on :%d drops edge-3", d.apiPort), 10*time.Second, func() bool {
			nodes := nodesOf(d)
			return nodes != nil && nodes["edge-3"] == nil && nodes["edge-1"] != nil && nodes["edge-2"] != nil
		})
	}
	t.Logf("edge-3 left after %s (NODE_TTL=2s)", time.Since(killed).Round(100*time.Millisecond))

	start := time.Now()
	m := ds[1].mustPut("tcp", first+1, fmt.Sprintf(`{"backends":[%q]}`, be.addr()))
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the PUT after edge-3 left took %s: it waited for a dead node", took)
	}
	wantGone := func(where string, st map[string]any, summary string) {
		t.Helper()
		gone := onNodes(st)["edge-3"]
		if st["summary"] != summary || gone["state"] != "gone" || !strings.Contains(fmt.Sprint(gone["error"]), "left the fleet") {
			t.Errorf("%s: status %v", where, st)
		}
	}
	wantGone("the PUT after edge-3 left", statusOf(m), "active on 2 of 2 nodes; gone: edge-3")
	if got, err := echoAt(at(fleetAddrs[1], first+1), "y\n"); err != nil || got != "k:y\n" {
		t.Errorf("edge-2 right after the answer: %q, %v", got, err)
	}
	_, g := ds[0].api("GET", fmt.Sprintf("/v1/streams/tcp/%d", first), "")
	wantGone("GET of the stream written before", statusOf(g), "active on 2 of 2 nodes; gone: edge-3")

	start = time.Now()
	code, m := ds[0].api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", first+2), fmt.Sprintf(`{"backends":[%q],"nodes":["edge-3"]}`, be.addr()))
	st := statusOf(m)
	if code != 201 || time.Since(start) > 5*time.Second || st["state"] != "pending" ||
		!strings.Contains(fmt.Sprint(st["error"]), "not served") {
		t.Errorf("a stream of the dead edge-3 alone: %d after %s, %v", code, time.Since(start), m)
	}
	wantGone("a stream of edge-3 alone", st, "active on 0 of 0 nodes; gone: edge-3")
}
