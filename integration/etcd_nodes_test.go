package integration

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// nodesOf is GET /v1/nodes on d, by name (nil if the request failed).
func nodesOf(d *daemon) map[string]map[string]any {
	code, m := d.api("GET", "/v1/nodes", "")
	list, _ := m["nodes"].([]any)
	if code != 200 {
		return nil
	}
	byName := map[string]map[string]any{}
	for _, n := range list {
		if n, ok := n.(map[string]any); ok {
			byName[fmt.Sprint(n["name"])] = n
		}
	}
	return byName
}

// echoAt sends msg to addr and returns what comes back.
func echoAt(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// Two daemons on one etcd register as nodes: GET /v1/nodes on either lists
// both, with the revision each applied after a PUT; one killed with
// SIGKILL leaves the list when its lease expires (NODE_TTL); a third with
// a NODE_NAME a live node holds refuses to start; one stopped cleanly
// leaves the list at once.
func TestEtcdNodes(t *testing.T) {
	srv := startEtcd(t)
	common := []string{"STATE_STORE=etcd", "ETCD_ENDPOINTS=" + srv.URL, "ETCD_PREFIX=/fleet", "NODE_TTL=3s"}
	d1 := startDaemon(t, 1, append(common, "NODE_NAME=edge-1", "STREAM_BIND_ADDRESS=127.0.0.11")...)
	sameRange := fmt.Sprintf("PORT_RANGE=%d-%d", d1.portMin, d1.portMax)
	d2 := newDaemon(t, 1, append(common, "NODE_NAME=edge-2", "STREAM_BIND_ADDRESS=127.0.0.12", sameRange)...)
	d2.start()

	be := startEcho(t, "a:")
	m := d1.mustPut("tcp", d1.portMin, fmt.Sprintf(`{"backends":[%q]}`, be.addr()))
	rev, _ := m["revision"].(float64)
	if rev == 0 {
		t.Fatalf("PUT answered no revision: %v", m)
	}
	port := strconv.Itoa(d1.portMin)
	for _, addr := range []string{"127.0.0.11:" + port, "127.0.0.12:" + port} {
		eventually(t, "the stream forwards on "+addr, 15*time.Second, func() bool {
			got, err := echoAt(addr, "hi\n")
			return err == nil && got == "a:hi\n"
		})
	}
	for _, d := range []*daemon{d1, d2} {
		eventually(t, fmt.Sprintf("GET /v1/nodes on :%d lists both nodes at revision %v", d.apiPort, rev), 15*time.Second, func() bool {
			nodes := nodesOf(d)
			for name, api := range map[string]int{"edge-1": d1.apiPort, "edge-2": d2.apiPort} {
				n := nodes[name]
				if n == nil || n["applied_revision"].(float64) < rev || n["api"] != "http://127.0.0.1:"+strconv.Itoa(api) ||
					n["nginx_running"] != true || n["streams"].(map[string]any)["active"] != float64(1) {
					return false
				}
			}
			return len(nodes) == 2
		})
	}

	d2.kill9()
	killed := time.Now()
	eventually(t, "edge-2 leaves the list within its lease", 10*time.Second, func() bool {
		nodes := nodesOf(d1)
		return nodes != nil && nodes["edge-2"] == nil && nodes["edge-1"] != nil
	})
	t.Logf("edge-2 left the list %s after SIGKILL (NODE_TTL=3s)", time.Since(killed).Round(100*time.Millisecond))

	dup := newDaemon(t, 1, append(common, "NODE_NAME=edge-1", "STREAM_BIND_ADDRESS=127.0.0.13", sameRange)...)
	out, err := dup.runToExit()
	if err == nil || !strings.Contains(out, "registered by another live stream-conductor") {
		t.Fatalf("a second edge-1 while the first lives: %v\n%s", err, out)
	}
	if nodes := nodesOf(d1); nodes["edge-1"] == nil || nodes["edge-1"]["api"] != "http://127.0.0.1:"+strconv.Itoa(d1.apiPort) {
		t.Fatalf("after the refused duplicate, edge-1 is %v", nodes["edge-1"])
	}

	d1.stop()
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/fleet/nodes/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("after a clean stop, the registry still holds %v (%v)", resp, err)
	}
}
