package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/internal/etcdtest"
)

// Fleet nodes while etcd is down, restarted, restored from an older
// backup, or changed outside the API (issue 12, items 3 and 4). Each test
// runs its own etcd and two daemon nodes, edge-1 serving its streams on
// 127.0.0.11 and edge-2 on 127.0.0.12, on the same ports.

// offlinePair is two daemon nodes on one etcd.
type offlinePair struct {
	srv    *etcdtest.Server
	d1, d2 *daemon
	ports  []int // PORT_RANGE, the same on both
}

func startOfflinePair(t *testing.T, ports int) *offlinePair {
	t.Helper()
	srv := startEtcd(t)
	common := []string{"STATE_STORE=etcd", "ETCD_ENDPOINTS=" + srv.URL, "ETCD_PREFIX=/fleet", "NODE_TTL=3s"}
	d1 := startDaemon(t, ports, append(common, "NODE_NAME=edge-1", "STREAM_BIND_ADDRESS=127.0.0.11")...)
	d2 := startDaemon(t, ports, append(common, "NODE_NAME=edge-2", "STREAM_BIND_ADDRESS=127.0.0.12",
		fmt.Sprintf("PORT_RANGE=%d-%d", d1.portMin, d1.portMax))...)
	p := &offlinePair{srv: srv, d1: d1, d2: d2}
	for port := d1.portMin; port <= d1.portMax; port++ {
		p.ports = append(p.ports, port)
	}
	return p
}

func (p *offlinePair) nodes() map[string]*daemon {
	return map[string]*daemon{"127.0.0.11": p.d1, "127.0.0.12": p.d2}
}

// forwardsOn says whether port on host carries bytes to the echo tagged tag.
func forwardsOn(host string, port int, tag string) bool {
	got, err := echoAt(host+":"+strconv.Itoa(port), "hi\n")
	return err == nil && got == tag+"hi\n"
}

// refusedOn says whether nothing listens on host:port.
func refusedOn(host string, port int) bool {
	_, err := echoAt(host+":"+strconv.Itoa(port), "hi\n")
	return err != nil && strings.Contains(err.Error(), "refused")
}

// serving waits until both nodes forward want (port → echo tag) and
// listen on none of gone.
func (p *offlinePair) serving(t *testing.T, what string, want map[int]string, gone ...int) {
	t.Helper()
	for host := range p.nodes() {
		eventually(t, what+" on "+host, 20*time.Second, func() bool {
			for port, tag := range want {
				if !forwardsOn(host, port, tag) {
					return false
				}
			}
			for _, port := range gone {
				if !refusedOn(host, port) {
					return false
				}
			}
			return true
		})
	}
}

// renderedPorts are the ports of the stream files d rendered.
func renderedPorts(d *daemon) []int {
	names, _ := filepath.Glob(filepath.Join(d.dataDir, "stream.d", "stream-*.conf"))
	var ports []int
	for _, n := range names {
		for f := range strings.FieldsFuncSeq(filepath.Base(n), func(r rune) bool { return r < '0' || r > '9' }) {
			if p, err := strconv.Atoi(f); err == nil && p > 1024 {
				ports = append(ports, p)
			}
		}
	}
	slices.Sort(ports)
	return ports
}

// readyzWhy is /readyz's status and reasons.
func readyzWhy(d *daemon) (int, string) {
	code, m := d.api("GET", "/readyz", "")
	return code, fmt.Sprint(m["reasons"])
}

// statusObject is a field of GET /v1/status (nil if absent).
func statusObject(d *daemon, field string) map[string]any {
	_, m := d.api("GET", "/v1/status", "")
	f, _ := m[field].(map[string]any)
	return f
}

// metricLine is the value of a metric in GET /metrics ("" if absent).
func metricLine(d *daemon, name string) string {
	_, raw := d.apiRaw("GET", "/metrics", "")
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// putOnceEtcdTakes PUTs body on d until etcd takes it (503 while the node
// has not seen etcd back yet).
func putOnceEtcdTakes(t *testing.T, d *daemon, port int, body string) {
	t.Helper()
	eventually(t, fmt.Sprintf("PUT tcp/%d accepted", port), 20*time.Second, func() bool {
		code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", port), body)
		if code != 503 && code != 200 && code != 201 {
			t.Fatalf("PUT tcp/%d: %d %v", port, code, m)
		}
		return code == 200 || code == 201
	})
}

func backendBody(addr string) string { return fmt.Sprintf(`{"backends":[%q]}`, addr) }

// All etcd down: both nodes keep forwarding, answer reads from their copy
// (marked stale: the X-State-Stale header, a stale object in /v1/status),
// refuse writes with 503 store_unavailable saying since when, and /readyz
// says why; with etcd back, writes pass again on either node and nothing
// was lost.
func TestFleetEtcdDownKeepsForwarding(t *testing.T) {
	t.Parallel()
	p := startOfflinePair(t, 2)
	a := startEcho(t, "a:")
	p0, p1 := p.ports[0], p.ports[1]
	p.d1.mustPut("tcp", p0, backendBody(a.addr()))
	p.serving(t, "the stream forwards", map[int]string{p0: "a:"})

	p.srv.Stop()
	for host, d := range p.nodes() {
		eventually(t, host+" reports etcd unreachable", 15*time.Second, func() bool {
			code, why := readyzWhy(d)
			return code == 503 && strings.Contains(why, "etcd unreachable since")
		})
		if s := statusObject(d, "stale"); s == nil || s["since"] == nil {
			t.Fatalf("%s: /v1/status stale = %v", host, s)
		}
		resp, err := http.Get(d.url(fmt.Sprintf("/v1/streams/tcp/%d", p0)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("X-State-Stale"), "etcd unreachable") {
			t.Fatalf("%s: GET the stream while etcd is down: %d, X-State-Stale %q", host, resp.StatusCode, resp.Header.Get("X-State-Stale"))
		}
		code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", p1), backendBody(a.addr()))
		e, _ := m["error"].(map[string]any)
		if code != 503 || e["code"] != "store_unavailable" || !strings.Contains(fmt.Sprint(e["message"]), "etcd unreachable since") {
			t.Fatalf("%s: PUT while etcd is down: %d %v", host, code, m)
		}
		if !forwardsOn(host, p0, "a:") {
			t.Fatalf("%s stopped forwarding while etcd is down", host)
		}
	}

	if err := p.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	putOnceEtcdTakes(t, p.d2, p1, backendBody(a.addr()))
	p.serving(t, "both streams forward after etcd came back", map[int]string{p0: "a:", p1: "a:"})
	for host, d := range p.nodes() {
		eventually(t, host+" ready again", 15*time.Second, func() bool { code, _ := readyzWhy(d); return code == 200 })
		resp, err := http.Get(d.url("/v1/streams"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if h := resp.Header.Get("X-State-Stale"); h != "" || statusObject(d, "stale") != nil {
			t.Fatalf("%s: still marked stale with etcd back: %q", host, h)
		}
	}
}

// A node stopped and one killed with SIGKILL, each with its nginx and
// rendered files gone, start again while etcd is down: each forwards its
// streams from its local copy. With etcd back, both register again and
// follow the writes made on the other.
func TestFleetNodeRestartWhileEtcdDown(t *testing.T) {
	t.Parallel()
	p := startOfflinePair(t, 3)
	a, b := startEcho(t, "a:"), startEcho(t, "b:")
	p0, p1, p2 := p.ports[0], p.ports[1], p.ports[2]
	p.d1.mustPut("tcp", p0, backendBody(a.addr()))
	p.d1.mustPut("tcp", p1, backendBody(b.addr()))
	p.serving(t, "the streams forward", map[int]string{p0: "a:", p1: "b:"})

	p.srv.Stop()
	p.d1.stop()
	p.d2.kill9()
	for host, d := range p.nodes() {
		d.stopNginx()
		files, _ := filepath.Glob(filepath.Join(d.dataDir, "stream.d", "*.conf"))
		for _, f := range files {
			os.Remove(f)
		}
		eventually(t, host+" stops forwarding with its nginx gone", 10*time.Second, func() bool { return refusedOn(host, p0) })
		d.startUnready()
	}
	p.serving(t, "the restarted nodes forward from their copy", map[int]string{p0: "a:", p1: "b:"})
	for host, d := range p.nodes() {
		if code, why := readyzWhy(d); code != 503 || !strings.Contains(why, "etcd unreachable") {
			t.Fatalf("%s restarted while etcd is down: readyz %d %s", host, code, why)
		}
		if got := renderedPorts(d); !slices.Equal(got, []int{p0, p1}) {
			t.Fatalf("%s rendered %v, want %v", host, got, []int{p0, p1})
		}
	}

	if err := p.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	putOnceEtcdTakes(t, p.d1, p2, backendBody(b.addr()))
	eventually(t, "edge-2 accepts a delete", 20*time.Second, func() bool {
		// 404: an earlier try was stored but not applied in time (503).
		code, _ := p.d2.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", p0), "")
		return code == 200 || code == 204 || code == 404
	})
	p.serving(t, "each node follows the other's writes", map[int]string{p1: "b:", p2: "b:"}, p0)
	for host, d := range p.nodes() {
		// Each node's key from before etcd went down lives one more
		// NODE_TTL after it is back (etcd renews leases on restart).
		eventually(t, host+" lists both nodes", 30*time.Second, func() bool {
			n := nodesOf(d)
			return n["edge-1"] != nil && n["edge-2"] != nil
		})
	}
}

// etcd restored from a copy of its data taken before later writes (a
// delete among them): its revision went back. Both nodes hold what they
// have (the deleted stream stays closed, the created one forwards), raise
// the alarm (readyz, status, metric) and refuse writes with state_held;
// one `stream-conductor confirm` on one node makes both apply etcd's state.
func TestFleetEtcdRestoredFromBackupHolds(t *testing.T) {
	t.Parallel()
	p := startOfflinePair(t, 3)
	a := startEcho(t, "a:")
	p0, p1, p2 := p.ports[0], p.ports[1], p.ports[2]
	p.d1.mustPut("tcp", p0, backendBody(a.addr()))
	p.d1.mustPut("tcp", p1, backendBody(a.addr()))
	p.serving(t, "the streams forward", map[int]string{p0: "a:", p1: "a:"})

	p.srv.Stop()
	backup := filepath.Join(t.TempDir(), "etcd-backup")
	if err := p.srv.CopyData(backup); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	putOnceEtcdTakes(t, p.d1, p2, backendBody(a.addr()))
	if code, m := p.d1.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", p0), ""); code != 200 && code != 204 {
		t.Fatalf("DELETE: %d %v", code, m)
	}
	later := map[int]string{p1: "a:", p2: "a:"}
	p.serving(t, "the later state", later, p0)

	p.srv.Stop()
	if err := p.srv.ReplaceData(backup); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	for host, d := range p.nodes() {
		eventually(t, host+" holds", 20*time.Second, func() bool {
			code, why := readyzWhy(d)
			return code == 503 && strings.Contains(why, "restored from an older backup")
		})
		al := statusObject(d, "alarm")
		if al["reason"] != "revision_backwards" || al["deletes"] != float64(1) || al["node_revision"].(float64) <= al["store_revision"].(float64) ||
			al["node_cluster_id"] == "" || al["node_cluster_id"] != al["store_cluster_id"] {
			t.Fatalf("%s: alarm %v", host, al)
		}
		if v := metricLine(d, "stream_conductor_state_held"); v != "1" {
			t.Fatalf("%s: stream_conductor_state_held = %q", host, v)
		}
		code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", p0), backendBody(a.addr()))
		if e, _ := m["error"].(map[string]any); code != 503 || e["code"] != "state_held" || !strings.Contains(fmt.Sprint(e["message"]), "confirm") {
			t.Fatalf("%s: PUT while held: %d %v", host, code, m)
		}
	}
	p.serving(t, "the held nodes keep the later state", later, p0)

	if out, code := p.d1.cliCode("confirm", "-url", p.d1.url("")); code != 0 || !strings.Contains(out, "confirmed") {
		t.Fatalf("stream-conductor confirm: exit %d\n%s", code, out)
	}
	restored := map[int]string{p0: "a:", p1: "a:"}
	p.serving(t, "both nodes apply the restored state", restored, p2)
	for host, d := range p.nodes() {
		eventually(t, host+" ready, no alarm", 15*time.Second, func() bool {
			code, _ := readyzWhy(d)
			return code == 200 && statusObject(d, "alarm") == nil && metricLine(d, "stream_conductor_state_held") == "0"
		})
		if got := renderedPorts(d); !slices.Equal(got, []int{p0, p1}) {
			t.Fatalf("%s rendered %v after the confirmation, want %v", host, got, []int{p0, p1})
		}
	}
	p.d2.mustPut("tcp", p2, backendBody(a.addr()))
	p.serving(t, "a write after the confirmation", map[int]string{p0: "a:", p1: "a:", p2: "a:"})
}

// Most streams deleted in one etcd transaction that did not come through
// the API (no marker): both nodes hold and keep forwarding them; one
// confirm call applies the deletion everywhere. The same deletion through
// the API (an import with prune) is applied at once.
func TestFleetMassDeletionOutsideTheAPIHolds(t *testing.T) {
	t.Parallel()
	p := startOfflinePair(t, 4)
	a := startEcho(t, "a:")
	all := map[int]string{}
	for _, port := range p.ports {
		p.d1.mustPut("tcp", port, backendBody(a.addr()))
		all[port] = "a:"
	}
	p.serving(t, "the streams forward", all)

	cli, err := p.srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var dels []clientv3.Op
	for _, port := range p.ports[:3] {
		dels = append(dels, clientv3.OpDelete(fmt.Sprintf("/fleet/streams/tcp/%d", port)))
	}
	if _, err := cli.Txn(ctx).Then(dels...).Commit(); err != nil {
		t.Fatal(err)
	}
	for host, d := range p.nodes() {
		eventually(t, host+" holds", 20*time.Second, func() bool {
			al := statusObject(d, "alarm")
			return al["reason"] == "mass_deletion" && al["deletes"] == float64(3)
		})
		if code, why := readyzWhy(d); code != 503 || !strings.Contains(why, "did not come through the stream-conductor API") {
			t.Fatalf("%s: readyz %d %s", host, code, why)
		}
	}
	p.serving(t, "the held nodes keep forwarding", all)

	if code, m := p.d2.api("POST", "/v1/state/confirm", ""); code != 200 {
		t.Fatalf("POST /v1/state/confirm: %d %v", code, m)
	}
	p.serving(t, "the confirmed deletion applies", map[int]string{p.ports[3]: "a:"}, p.ports[:3]...)

	for _, port := range p.ports[:3] {
		p.d1.mustPut("tcp", port, backendBody(a.addr()))
	}
	p.serving(t, "the streams forward again", all)
	body := fmt.Sprintf(`{"streams":[{"protocol":"tcp","listen":%d,"backends":[%q]}]}`, p.ports[3], a.addr())
	if code, m := p.d2.api("POST", "/v1/import?prune=true", body); code != 200 {
		t.Fatalf("import with prune: %d %v", code, m)
	}
	p.serving(t, "the pruning import applies at once", map[int]string{p.ports[3]: "a:"}, p.ports[:3]...)
	for host, d := range p.nodes() {
		if al := statusObject(d, "alarm"); al != nil {
			t.Fatalf("%s: alarm after an import through the API: %v", host, al)
		}
	}
}
