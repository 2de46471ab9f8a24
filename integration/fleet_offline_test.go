package integration

import (
	"context"
	"encoding/json"
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
// backup, or changed outside the API (issue 12, items 3 and 4), on the
// fleet fixture: a 3-member etcd cluster of the test's own when the test
// kills or restores it (startCluster), the shared one otherwise. Every
// etcd member killed at once is TestFleetEtcdMemberKilled's last act.

// ports are the first n ports every node of f serves.
func (f *fleet) ports(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = f.portMin() + i
	}
	return out
}

// serving waits until each node named (every node when none is) forwards
// want (port → echo tag) and listens on none of gone.
func (f *fleet) serving(what string, want map[int]string, gone []int, nodes ...int) {
	f.t.Helper()
	if len(nodes) == 0 {
		nodes = f.all()
	}
	for _, i := range nodes {
		host := f.ips[i]
		eventually(f.t, fmt.Sprintf("%s on edge-%d", what, i+1), 20*time.Second, func() bool {
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

// etcdRevision is the cluster's revision now.
func etcdRevision(t *testing.T, c *etcdtest.Cluster) int64 {
	t.Helper()
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// pushRevisionPast writes keys outside every prefix until the cluster's
// revision is above rev.
func pushRevisionPast(t *testing.T, c *etcdtest.Cluster, rev int64) {
	t.Helper()
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; ; i++ {
		resp, err := cli.Put(ctx, fmt.Sprintf("/elsewhere/%d", i), "x")
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Revision > rev {
			return
		}
		if i > 10000 {
			t.Fatalf("etcd's revision stays at %d, not above %d", resp.Header.Revision, rev)
		}
	}
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

// etcdDownOn requires what every node of f does while no etcd member
// answers: /readyz 503 saying why, reads answered from its copy marked
// stale (X-State-Stale, a stale object in /v1/status), writes refused with
// 503 store_unavailable saying since when, and want (port → echo tag)
// still forwarded.
func (f *fleet) etcdDownOn(want map[int]string, refused int) {
	f.t.Helper()
	t := f.t
	for i, d := range f.nodes {
		node := fmt.Sprintf("edge-%d", i+1)
		eventually(t, node+" reports etcd unreachable", 15*time.Second, func() bool {
			code, why := readyzWhy(d)
			return code == 503 && strings.Contains(why, "etcd unreachable since")
		})
		if s := statusObject(d, "stale"); s == nil || s["since"] == nil {
			t.Fatalf("%s: /v1/status stale = %v", node, s)
		}
		code, stale, listed, err := listedPorts(d)
		if err != nil || code != 200 || !strings.Contains(stale, "etcd unreachable") || len(listed) != len(want) {
			t.Fatalf("%s: GET /v1/streams while etcd is down: %d (%v), X-State-Stale %q, %d streams, want %d",
				node, code, err, stale, len(listed), len(want))
		}
		code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", refused), backendBody("127.0.0.1:9"))
		e, _ := m["error"].(map[string]any)
		if code != 503 || e["code"] != "store_unavailable" || !strings.Contains(fmt.Sprint(e["message"]), "etcd unreachable since") {
			t.Fatalf("%s: PUT while etcd is down: %d %v", node, code, m)
		}
		for port, tag := range want {
			if !forwardsOn(f.ips[i], port, tag) {
				t.Fatalf("%s stopped forwarding port %d while etcd is down", node, port)
			}
		}
	}
}

// listedPorts is GET /v1/streams on d: its status, its X-State-Stale
// header and the ports it lists.
func listedPorts(d *daemon) (code int, stale string, ports []int, err error) {
	resp, err := http.Get(d.url("/v1/streams"))
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	var list struct {
		Streams []struct {
			Listen int `json:"listen"`
		} `json:"streams"`
	}
	err = json.NewDecoder(resp.Body).Decode(&list)
	for _, s := range list.Streams {
		ports = append(ports, s.Listen)
	}
	return resp.StatusCode, resp.Header.Get("X-State-Stale"), ports, err
}

// etcdBackOn requires every node of f ready again, its reads no longer
// stale, and every stream of want (port → echo tag) in its list and
// forwarded: nothing acked was lost.
func (f *fleet) etcdBackOn(want map[int]string) {
	f.t.Helper()
	t := f.t
	f.serving("every acked stream forwards", want, nil)
	for i, d := range f.nodes {
		node := fmt.Sprintf("edge-%d", i+1)
		eventually(t, node+" ready again", 15*time.Second, func() bool { code, _ := readyzWhy(d); return code == 200 })
		_, stale, listed, err := listedPorts(d)
		if err != nil || stale != "" || statusObject(d, "stale") != nil {
			t.Fatalf("%s with etcd back: %v, X-State-Stale %q, stale %v", node, err, stale, statusObject(d, "stale"))
		}
		for port := range want {
			if !slices.Contains(listed, port) {
				t.Fatalf("%s lost the acked stream tcp/%d: it lists %v", node, port, listed)
			}
		}
	}
}

// A node stopped and one killed with SIGKILL, each with its nginx and
// rendered files gone, start again while etcd is down: each forwards its
// streams from its local copy. With etcd back, both register again and
// follow the writes made on the other.
func TestFleetNodeRestartWhileEtcdDown(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	f := startFleet(t, c, fleetOptions{nodes: 2, ports: 3})
	d1, d2 := f.nodes[0], f.nodes[1]
	a, b := startEcho(t, "a:"), startEcho(t, "b:")
	ps := f.ports(3)
	p0, p1, p2 := ps[0], ps[1], ps[2]
	d1.mustPut("tcp", p0, backendBody(a.addr()))
	d1.mustPut("tcp", p1, backendBody(b.addr()))
	f.serving("the streams forward", map[int]string{p0: "a:", p1: "b:"}, nil)

	c.KillAll()
	d1.stop()
	d2.kill9()
	for i, d := range f.nodes {
		d.stopNginx()
		files, _ := filepath.Glob(filepath.Join(d.dataDir, "stream.d", "*.conf"))
		for _, file := range files {
			os.Remove(file)
		}
		eventually(t, fmt.Sprintf("edge-%d stops forwarding with its nginx gone", i+1), 10*time.Second, func() bool { return refusedOn(f.ips[i], p0) })
		d.startUnready()
	}
	f.serving("the restarted nodes forward from their copy", map[int]string{p0: "a:", p1: "b:"}, nil)
	for i, d := range f.nodes {
		if code, why := readyzWhy(d); code != 503 || !strings.Contains(why, "etcd unreachable") {
			t.Fatalf("edge-%d restarted while etcd is down: readyz %d %s", i+1, code, why)
		}
		if got := renderedPorts(d); !slices.Equal(got, []int{p0, p1}) {
			t.Fatalf("edge-%d rendered %v, want %v", i+1, got, []int{p0, p1})
		}
	}

	if err := c.RestartAll(); err != nil {
		t.Fatal(err)
	}
	putOnceEtcdTakes(t, d1, p2, backendBody(b.addr()))
	eventually(t, "edge-2 accepts a delete", 20*time.Second, func() bool {
		// 404: an earlier try was stored but not applied in time (503).
		code, _ := d2.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", p0), "")
		return code == 200 || code == 204 || code == 404
	})
	f.serving("each node follows the other's writes", map[int]string{p1: "b:", p2: "b:"}, []int{p0})
	for i, d := range f.nodes {
		// Each node's key from before etcd went down lives one more
		// NODE_TTL after it is back (etcd renews leases on restart).
		eventually(t, fmt.Sprintf("edge-%d lists both nodes", i+1), 30*time.Second, func() bool {
			n := nodesOf(d)
			return n["edge-1"] != nil && n["edge-2"] != nil
		})
	}
}

// heldOn requires node i of f to hold: /readyz 503 saying why (why), the
// alarm in /v1/status (reason revision_backwards, deletes), the metric,
// writes refused with state_held; it returns the alarm.
func (f *fleet) heldOn(i int, why string, deletes int) map[string]any {
	f.t.Helper()
	t, d, node := f.t, f.nodes[i], fmt.Sprintf("edge-%d", i+1)
	eventually(t, node+" holds", 20*time.Second, func() bool {
		code, reasons := readyzWhy(d)
		return code == 503 && strings.Contains(reasons, why)
	})
	al := statusObject(d, "alarm")
	if al["reason"] != "revision_backwards" || al["deletes"] != float64(deletes) || al["node_cluster_id"] == "" || al["node_cluster_id"] != al["store_cluster_id"] {
		t.Fatalf("%s: alarm %v, want revision_backwards deleting %d on the same cluster", node, al, deletes)
	}
	if v := metricLine(d, "stream_conductor_state_held"); v != "1" {
		t.Fatalf("%s: stream_conductor_state_held = %q", node, v)
	}
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", f.portMax()), backendBody("127.0.0.1:9"))
	if e, _ := m["error"].(map[string]any); code != 503 || e["code"] != "state_held" || !strings.Contains(fmt.Sprint(e["message"]), "confirm") {
		t.Fatalf("%s: PUT while held: %d %v", node, code, m)
	}
	return al
}

// unheldOn waits until every node named is ready with no alarm and
// renders exactly want's ports.
func (f *fleet) unheldOn(want []int, nodes ...int) {
	f.t.Helper()
	for _, i := range nodes {
		d := f.nodes[i]
		eventually(f.t, fmt.Sprintf("edge-%d ready, no alarm", i+1), 15*time.Second, func() bool {
			code, _ := readyzWhy(d)
			return code == 200 && statusObject(d, "alarm") == nil && metricLine(d, "stream_conductor_state_held") == "0"
		})
		if got := renderedPorts(d); !slices.Equal(got, want) {
			f.t.Fatalf("edge-%d rendered %v after the confirmation, want %v", i+1, got, want)
		}
	}
}

// etcd (all three members) restored from a copy of its data taken before
// later writes (a delete among them): its revision went back. The running
// nodes hold what they have (the deleted stream stays closed, the created
// one forwards), raise the alarm (readyz, status, metric) and refuse
// writes with state_held; one restarted meanwhile stays held. One
// `stream-conductor confirm` makes them apply etcd's state, and a write
// right after it answers applied. edge-3, stopped all along, comes back
// after etcd was written past its revision: it sees that etcd's history
// is not its copy's and holds too, until confirmed in turn.
func TestFleetEtcdRestoredFromBackupHolds(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	f := startFleet(t, c, fleetOptions{ports: 5})
	d1, d2, d3 := f.nodes[0], f.nodes[1], f.nodes[2]
	a := startEcho(t, "a:")
	ps := f.ports(4)
	p0, p1, p2, p3 := ps[0], ps[1], ps[2], ps[3]
	d1.mustPut("tcp", p0, backendBody(a.addr()))
	d1.mustPut("tcp", p1, backendBody(a.addr()))
	f.serving("the streams forward", map[int]string{p0: "a:", p1: "a:"}, nil)

	c.KillAll()
	backup := filepath.Join(t.TempDir(), "etcd-backup")
	if err := c.CopyData(backup); err != nil {
		t.Fatal(err)
	}
	if err := c.RestartAll(); err != nil {
		t.Fatal(err)
	}
	putOnceEtcdTakes(t, d1, p2, backendBody(a.addr()))
	if code, m := d1.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", p0), ""); code != 200 && code != 204 {
		t.Fatalf("DELETE: %d %v", code, m)
	}
	later := map[int]string{p1: "a:", p2: "a:"}
	f.serving("the later state", later, []int{p0})
	d3.stop()
	seen := etcdRevision(t, c) // edge-3's copy is complete through at most this

	c.KillAll()
	if err := c.ReplaceData(backup); err != nil {
		t.Fatal(err)
	}
	if err := c.RestartAll(); err != nil {
		t.Fatal(err)
	}
	f.heldOn(0, "restored from an older backup", 1)
	al := f.heldOn(1, "restored from an older backup", 1)
	d2.stop()
	d2.startUnready()
	if again := f.heldOn(1, "restored from an older backup", 1); again["since"] != al["since"] {
		t.Fatalf("edge-2 restarted while held: alarm since %v, want the one it had, %v", again["since"], al["since"])
	}
	f.serving("the held nodes keep the later state", later, []int{p0}, 0, 1)

	if out, code := d1.cliCode("confirm", "-url", d1.url("")); code != 0 || !strings.Contains(out, "confirmed") {
		t.Fatalf("stream-conductor confirm: exit %d\n%s", code, out)
	}
	d1.mustPut("tcp", p3, backendBody(a.addr())) // answers active: applied on the new timeline
	restored := map[int]string{p0: "a:", p1: "a:", p3: "a:"}
	f.serving("edge-1 and edge-2 apply the restored state", restored, []int{p2}, 0, 1)
	f.unheldOn([]int{p0, p1, p3}, 0, 1)

	pushRevisionPast(t, c, seen)
	d3.startUnready()
	f.heldOn(2, "written since", 1)
	f.serving("edge-3 holds its copy", later, []int{p0, p3}, 2)
	if code, m := d3.api("POST", "/v1/state/confirm", ""); code != 200 {
		t.Fatalf("POST /v1/state/confirm on edge-3: %d %v", code, m)
	}
	f.serving("every node serves etcd's state", restored, []int{p2})
	f.unheldOn([]int{p0, p1, p3}, 0, 1, 2)
}

// Most streams deleted in one etcd transaction that did not come through
// the API (no marker): both nodes hold and keep forwarding them; one
// confirm call applies the deletion everywhere. The same deletion through
// the API (an import with prune) is applied at once.
func TestFleetMassDeletionOutsideTheAPIHolds(t *testing.T) {
	t.Parallel()
	c := sharedCluster(t)
	f := startFleet(t, c, fleetOptions{nodes: 2, ports: 4})
	ps := f.ports(4)
	a := startEcho(t, "a:")
	all := map[int]string{}
	for _, port := range ps {
		f.nodes[0].mustPut("tcp", port, backendBody(a.addr()))
		all[port] = "a:"
	}
	f.serving("the streams forward", all, nil)

	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var dels []clientv3.Op
	for _, port := range ps[:3] {
		dels = append(dels, clientv3.OpDelete(fmt.Sprintf("%s/streams/tcp/%d", f.prefix, port)))
	}
	if _, err := cli.Txn(ctx).Then(dels...).Commit(); err != nil {
		t.Fatal(err)
	}
	for i, d := range f.nodes {
		eventually(t, fmt.Sprintf("edge-%d holds", i+1), 20*time.Second, func() bool {
			al := statusObject(d, "alarm")
			return al["reason"] == "mass_deletion" && al["deletes"] == float64(3)
		})
		if code, why := readyzWhy(d); code != 503 || !strings.Contains(why, "did not come through the stream-conductor API") {
			t.Fatalf("edge-%d: readyz %d %s", i+1, code, why)
		}
	}
	f.serving("the held nodes keep forwarding", all, nil)

	if code, m := f.nodes[1].api("POST", "/v1/state/confirm", ""); code != 200 {
		t.Fatalf("POST /v1/state/confirm: %d %v", code, m)
	}
	f.serving("the confirmed deletion applies", map[int]string{ps[3]: "a:"}, ps[:3])

	for _, port := range ps[:3] {
		f.nodes[0].mustPut("tcp", port, backendBody(a.addr()))
	}
	f.serving("the streams forward again", all, nil)
	body := fmt.Sprintf(`{"streams":[{"protocol":"tcp","listen":%d,"backends":[%q]}]}`, ps[3], a.addr())
	if code, m := f.nodes[1].api("POST", "/v1/import?prune=true", body); code != 200 {
		t.Fatalf("import with prune: %d %v", code, m)
	}
	f.serving("the pruning import applies at once", map[int]string{ps[3]: "a:"}, ps[:3])
	for i, d := range f.nodes {
		if al := statusObject(d, "alarm"); al != nil {
			t.Fatalf("edge-%d: alarm after an import through the API: %v", i+1, al)
		}
	}
}
