package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A PUT on edge-1: the bytes flow through all three nodes, and GET on
// edge-2 and edge-3 shows the stream.
func TestFleetPutForwardsOnEveryNode(t *testing.T) {
	f := startFleet(t, sharedCluster(t), fleetOptions{})
	be := startEcho(t, "a:")
	port := f.portMin()
	f.nodes[0].mustPut("tcp", port, fmt.Sprintf(`{"backend":%q}`, be.addr()))
	f.waitForwards(port, "a:", 30*time.Second)
	for _, i := range []int{1, 2} {
		code, m := f.nodes[i].api("GET", fmt.Sprintf("/v1/streams/tcp/%d", port), "")
		if backends, _ := m["backends"].([]any); code != 200 || len(backends) != 1 || backends[0] != be.addr() {
			t.Fatalf("GET tcp/%d on edge-%d: %d %v", port, i+1, code, m)
		}
	}
}

// 3 nodes x 8 clients POST at once (the node picks the port): every port
// is distinct, every stream forwards to its own backend through all three
// nodes, and every 201 is in every node's list: none is lost. A 503 (etcd
// did not commit within the request's timeout: a loaded machine) is an
// honest refusal, not a loss; such a POST may still have landed, so each
// node may list it too, but no stream that no POST asked for.
func TestFleetConcurrentAllocation(t *testing.T) {
	const clients = 8
	f := startFleet(t, sharedCluster(t), fleetOptions{ports: 30})
	type result struct {
		tag  string
		code int
		port int
		err  error
	}
	results := make(chan result, len(f.nodes)*clients)
	start := make(chan struct{})
	tagOfBackend := map[string]string{}
	var wg sync.WaitGroup
	for i, d := range f.nodes {
		for j := range clients {
			tag := fmt.Sprintf("n%dc%d:", i+1, j)
			be := startEcho(t, tag)
			tagOfBackend[be.addr()] = tag
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				code, port, err := post(d, fmt.Sprintf(`{"backend":%q}`, be.addr()))
				results <- result{tag, code, port, err}
			}()
		}
	}
	close(start)
	wg.Wait()
	close(results)

	created := map[int]string{} // port -> tag, from the 201s
	unacked := map[string]bool{}
	for r := range results {
		switch {
		case r.err == nil && r.code == http.StatusCreated:
			if other, dup := created[r.port]; dup {
				t.Fatalf("port %d allocated twice: to %s and %s", r.port, other, r.tag)
			}
			created[r.port] = r.tag
		case r.err == nil && r.code == http.StatusServiceUnavailable:
			unacked[r.tag] = true
		default:
			t.Fatalf("POST /v1/streams for %s: %d %v", r.tag, r.code, r.err)
		}
	}
	t.Logf("%d POSTs: %d created, %d answered 503", len(f.nodes)*clients, len(created), len(unacked))
	if len(created) == 0 {
		t.Fatal("no POST created a stream")
	}
	var listed map[int]string
	for i, d := range f.nodes {
		listed = map[int]string{}
		for port, backend := range listedStreams(t, d) {
			listed[port] = tagOfBackend[backend]
		}
		for port, tag := range created {
			if listed[port] != tag {
				t.Fatalf("edge-%d lists port %d as %q; a POST for %s got it (201): lost", i+1, port, listed[port], tag)
			}
		}
		for port, tag := range listed {
			if created[port] == "" && !unacked[tag] {
				t.Fatalf("edge-%d lists port %d for %q, which no unanswered POST asked for", i+1, port, tag)
			}
		}
	}
	for port, tag := range listed {
		f.waitForwards(port, tag, 30*time.Second)
	}
}

// post sends POST /v1/streams with body and returns the status and the
// port it got; it never fails the test (it runs on other goroutines).
func post(d *daemon, body string) (int, int, error) {
	req, err := newRequest("POST", d.url("/v1/streams"), body)
	if err != nil {
		return 0, 0, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var m struct {
		Listen int `json:"listen"`
	}
	err = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m.Listen, err
}

// listedStreams are the streams GET /v1/streams on d lists: port ->
// first backend.
func listedStreams(t *testing.T, d *daemon) map[int]string {
	t.Helper()
	code, m := d.api("GET", "/v1/streams", "")
	list, _ := m["streams"].([]any)
	if code != 200 {
		t.Fatalf("GET /v1/streams on :%d: %d %v", d.apiPort, code, m)
	}
	streams := map[int]string{}
	for _, s := range list {
		s := s.(map[string]any)
		backends, _ := s["backends"].([]any)
		if len(backends) > 0 {
			streams[int(s["listen"].(float64))] = fmt.Sprint(backends[0])
		}
	}
	return streams
}

// One etcd member (the leader) killed: once the other two elected a
// leader, writes go on through every node and forward everywhere. The
// member restarted on its data rejoins: with another member killed, the
// writes still go on, which takes the restarted member's vote. Then every
// member killed: every node keeps forwarding, answers reads (stale),
// refuses writes with 503 and says why in /readyz; the members restarted,
// writes go on through every node and no acked write was lost.
func TestFleetEtcdMemberKilled(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	f := startFleet(t, c, fleetOptions{ports: 10})
	be := startEcho(t, "m:")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	if err := c.WaitHealthy(10 * time.Second); err != nil {
		t.Fatalf("the two members left: %v", err)
	}
	writeOnEveryNode(t, f, f.portMin(), be)

	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	other := (leader + 1) % len(c.Members())
	c.Kill(other)
	if err := c.WaitHealthy(10 * time.Second); err != nil {
		t.Fatalf("the restarted member and the third: %v", err)
	}
	writeOnEveryNode(t, f, f.portMin()+len(f.nodes), be)

	acked := map[int]string{}
	for i := range 2 * len(f.nodes) {
		acked[f.portMin()+i] = "m:"
	}
	c.KillAll()
	f.etcdDownOn(acked, f.portMax())
	if err := c.RestartAll(); err != nil {
		t.Fatal(err)
	}
	for i, d := range f.nodes {
		port := f.portMin() + 2*len(f.nodes) + i
		putOnceEtcdTakes(t, d, port, backendBody(be.addr()))
		acked[port] = "m:"
	}
	f.etcdBackOn(acked)
}

// writeOnEveryNode PUTs port first+i on node i and requires every stream
// forward through every node.
func writeOnEveryNode(t *testing.T, f *fleet, first int, be *echoServer) {
	t.Helper()
	for i, d := range f.nodes {
		d.mustPut("tcp", first+i, fmt.Sprintf(`{"backend":%q}`, be.addr()))
	}
	for i := range f.nodes {
		f.waitForwards(first+i, "m:", 30*time.Second)
	}
}

// edge-3 reaches etcd only through a relay. With the relay cut, it keeps
// forwarding what it had while the others take writes (a replaced stream
// still goes to its old backend, a deleted one still forwards, a new one
// is not there); with the relay back it catches up.
func TestFleetNodeCutFromEtcd(t *testing.T) {
	c := sharedCluster(t)
	r := startRelay(t, strings.TrimPrefix(c.Members()[0].ClientURL, "http://"))
	all := strings.Join(c.Endpoints(), ",")
	f := startFleet(t, c, fleetOptions{endpoints: func(i int) string {
		if i == 2 {
			return r.URL()
		}
		return all
	}})
	a, b := startEcho(t, "a:"), startEcho(t, "b:")
	replaced, deleted, added := f.portMin(), f.portMin()+1, f.portMin()+2
	for _, port := range []int{replaced, deleted} {
		f.nodes[0].mustPut("tcp", port, fmt.Sprintf(`{"backend":%q}`, a.addr()))
		f.waitForwards(port, "a:", 30*time.Second)
	}

	r.Cut()
	cut := f.nodes[2]
	eventually(t, "edge-3 is not ready without etcd", 30*time.Second, func() bool {
		code, _ := cut.apiRaw("GET", "/readyz", "")
		return code == http.StatusServiceUnavailable
	})
	f.nodes[0].mustPut("tcp", replaced, fmt.Sprintf(`{"backend":%q}`, b.addr()))
	if code, m := f.nodes[1].api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", deleted), ""); code != 204 {
		t.Fatalf("DELETE on edge-2: %d %v", code, m)
	}
	f.nodes[0].mustPut("tcp", added, fmt.Sprintf(`{"backend":%q}`, b.addr()))
	f.waitForwards(replaced, "b:", 30*time.Second, 0, 1)
	f.waitForwards(added, "b:", 30*time.Second, 0, 1)
	f.waitRefuses(deleted, 30*time.Second, 0, 1)
	for port, want := range map[int]string{replaced: "a:", deleted: "a:"} {
		if !f.forwards(2, port, want) {
			t.Fatalf("cut from etcd, edge-3 no longer forwards port %d to %q as before", port, want)
		}
	}
	if !f.refuses(2, added) {
		t.Fatalf("cut from etcd, edge-3 serves port %d, created after the cut", added)
	}

	r.Restore()
	f.waitForwards(replaced, "b:", 30*time.Second, 2)
	f.waitForwards(added, "b:", 30*time.Second, 2)
	f.waitRefuses(deleted, 30*time.Second, 2)
	if ports := slices.Sorted(maps.Keys(listedStreams(t, cut))); !slices.Equal(ports, []int{replaced, added}) {
		t.Fatalf("edge-3 caught up but lists %v", ports)
	}
}
