package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// GET /v1/events from the real daemon: each event type is produced by a
// real action (a write through the API, a port held by another process,
// a file edited by hand, a backend that stops listening, bytes through a
// stream, a node of the fleet that stops and starts, an import).

// A stream's life, each step seen on GET /v1/events as it happens:
// created, its status pending → active and the reload that applied it;
// updated with the spec before; traffic through it; its backend going
// down and up; its file edited by hand (drift found and repaired);
// deleted.
func TestEventsOfAStreamsLife(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2, "HEALTH_INTERVAL=100ms", "HEALTH_TIMEOUT=1s")
	ev := watchEvents(t, d, "")
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	port := d.portMin
	id := fmt.Sprintf("tcp/%d", port)

	// Created: the spec, the status and the reload.
	m := d.mustPut("tcp", port, `{"backend":"`+a.addr()+`"}`)
	rev := m["revision"].(float64)
	created := ev.wait(0, "stream.created", "stream.created", 5*time.Second, isStream(id))
	if spec := created.Data["spec"].(map[string]any); created.Data["revision"] != rev || spec["backends"].([]any)[0] != a.addr() {
		t.Fatalf("stream.created %v, want revision %v and backend %s", created.Data, rev, a.addr())
	}
	st := ev.wait(0, "status active", "stream.status", 5*time.Second, isStream(id))
	if st.Data["state"] != "active" || st.Data["previous"] != "pending" || st.Data["revision"] != rev || st.Data["shard"] != float64(0) {
		t.Fatalf("stream.status %v, want pending → active at revision %v on shard 0", st.Data, rev)
	}
	rl := ev.wait(0, "a reload", "reload", 5*time.Second, nil)
	if rl.Data["shard"] != float64(0) || rl.Data["outcome"] != "ok" || (rl.Data["op"] != "reload" && rl.Data["op"] != "start") || rl.Data["streams"] != float64(1) {
		t.Fatalf("reload %v, want shard 0's, ok, with 1 stream", rl.Data)
	}

	// Updated: the spec and the one before.
	mark := ev.last()
	m = d.mustPut("tcp", port, `{"backend":"`+b.addr()+`"}`)
	upd := ev.wait(mark, "stream.updated", "stream.updated", 5*time.Second, isStream(id))
	prev, _ := upd.Data["previous"].(map[string]any)
	if upd.Data["revision"] != m["revision"] || prev == nil || prev["backends"].([]any)[0] != a.addr() ||
		upd.Data["spec"].(map[string]any)["backends"].([]any)[0] != b.addr() {
		t.Fatalf("stream.updated %v, want %s → %s", upd.Data, a.addr(), b.addr())
	}
	ev.wait(mark, "status of the update", "stream.status", 5*time.Second, func(m2 map[string]any) bool {
		return m2["id"] == id && m2["state"] == "active" && m2["revision"] == m["revision"]
	})

	// Traffic: bytes through the stream, counted from nginx's log.
	mark = ev.last()
	mustEcho(t, port, "B:")
	tr := ev.wait(mark, "a traffic event", "traffic", 10*time.Second, func(m2 map[string]any) bool {
		s, _ := m2["streams"].(map[string]any)[id].(map[string]any)
		return s != nil && s["sessions"].(float64) >= 1
	})
	if s := tr.Data["streams"].(map[string]any)[id].(map[string]any); s["bytes_in"].(float64) == 0 || s["bytes_out"].(float64) == 0 {
		t.Fatalf("traffic %v: no bytes", tr.Data)
	}

	// Backend health: B stops listening, then listens again.
	mark = ev.last()
	addr := b.addr()
	b.ln.Close()
	down := ev.wait(mark, "backend down", "backend.health", 10*time.Second, func(m2 map[string]any) bool {
		return m2["address"] == addr && m2["up"] == false
	})
	if down.Data["previous"] != true || down.Data["error"] == "" || fmt.Sprint(down.Data["streams"]) != "["+id+"]" {
		t.Fatalf("backend.health %v, want up → down with the error, used by %s", down.Data, id)
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("listen on %s again: %v", addr, err)
	}
	defer ln.Close()
	ev.wait(mark, "backend up again", "backend.health", 10*time.Second, func(m2 map[string]any) bool {
		return m2["address"] == addr && m2["up"] == true && m2["previous"] == false
	})

	// Drift: the file edited by hand, repaired from the store.
	mark = ev.last()
	file := filepath.Join(d.dataDir, "stream.d", fmt.Sprintf("stream-tcp-%d.conf", port))
	if err := os.WriteFile(file, []byte("# edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	isFiles := func(m2 map[string]any) bool {
		return m2["kind"] == "files" && fmt.Sprint(m2["streams"]) == "["+id+"]"
	}
	det := ev.wait(mark, "drift.detected", "drift.detected", 10*time.Second, isFiles)
	rep := ev.wait(mark, "drift.repaired", "drift.repaired", 10*time.Second, isFiles)
	if rep.ID <= det.ID {
		t.Fatalf("drift repaired (%d) before it was detected (%d)", rep.ID, det.ID)
	}

	// Deleted: the spec as it was last.
	mark = ev.last()
	if code, _ := d.api("DELETE", "/v1/streams/"+id, ""); code != 200 && code != 204 {
		t.Fatalf("DELETE: %d", code)
	}
	del := ev.wait(mark, "stream.deleted", "stream.deleted", 5*time.Second, isStream(id))
	if del.Data["spec"].(map[string]any)["backends"].([]any)[0] != addr {
		t.Fatalf("stream.deleted %v, want its last spec", del.Data)
	}
	if err := ev.failed(); err != nil {
		t.Fatal(err)
	}
}

// An import of more than 64 streams is one bulk event, not an event
// each, and so are the statuses of the pass that applies it; ?types=
// keeps to the types asked for.
func TestEventsBulkImport(t *testing.T) {
	t.Parallel()
	const n = 66
	d := startDaemon(t, n)
	be := startEcho(t, "A:")
	ev := watchEvents(t, d, "types=bulk,stream.created,stream.status")
	var items []string
	for p := d.portMin; p <= d.portMax; p++ {
		items = append(items, fmt.Sprintf(`{"protocol":"tcp","listen":%d,"backends":["%s"]}`, p, be.addr()))
	}
	if code, m := d.api("POST", "/v1/import", `{"streams":[`+strings.Join(items, ",")+`]}`); code != 200 {
		t.Fatalf("import: %d %v", code, m)
	}
	bulk := ev.wait(0, "a bulk event of streams", "bulk", 10*time.Second, func(m map[string]any) bool { return m["what"] == "streams" })
	counts := bulk.Data["counts"].(map[string]any)
	if counts["created"] != float64(n) || counts["updated"] != float64(0) || counts["deleted"] != float64(0) {
		t.Fatalf("bulk %v, want %d created", bulk.Data, n)
	}
	st := ev.wait(0, "a bulk event of statuses", "bulk", 10*time.Second, func(m map[string]any) bool { return m["what"] == "statuses" })
	if sc := st.Data["counts"].(map[string]any); sc["active"] != float64(n) || st.Data["shard"] != float64(0) {
		t.Fatalf("bulk statuses %v, want %d active on shard 0", st.Data, n)
	}
	mustEcho(t, d.portMax, "A:")
	if c := ev.count(0, "stream.created", nil) + ev.count(0, "stream.status", nil); c != 0 {
		t.Fatalf("%d stream events beside the bulk ones", c)
	}
	for _, e := range ev.all() {
		if e.Type != "bulk" {
			t.Fatalf("?types= let through a %s event", e.Type)
		}
	}
}

// A stream whose port another process holds: its status event says
// failed, in nginx's words (bind() ... Address already in use); the
// write path then undoes the refused write, which is a stream.deleted.
func TestEventsFailedStatusInNginxWords(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEcho(t, "A:")
	ev := watchEvents(t, d, "types=stream.status,stream.deleted")
	port := d.portMin + 1
	squatter, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	// An import does not refuse a held port (PUT does, 409): the
	// reconciler finds it held.
	body := fmt.Sprintf(`{"streams":[{"protocol":"tcp","listen":%d,"backends":["%s"]}]}`, port, be.addr())
	if code, m := d.api("POST", "/v1/import", body); code != 200 {
		t.Fatalf("import: %d %v", code, m)
	}
	id := fmt.Sprintf("tcp/%d", port)
	st := ev.wait(0, "status failed", "stream.status", 10*time.Second, isStream(id))
	want := fmt.Sprintf("bind() to 127.0.0.1:%d failed (98: Address already in use)", port)
	if st.Data["state"] != "failed" || st.Data["previous"] != "pending" || !strings.Contains(fmt.Sprint(st.Data["error"]), want) ||
		st.Data["node"] == nil {
		t.Fatalf("stream.status %v, want pending → failed: %s", st.Data, want)
	}
	ev.wait(st.ID, "the refused write undone", "stream.deleted", 10*time.Second, isStream(id))
}

// A fleet of two nodes on etcd: a stream written through one node is a
// stream.created event on the other; a node that stops is node.left on
// the other, and node.joined when it starts again.
func TestEventsFleetNodesAndPeersWrites(t *testing.T) {
	t.Parallel()
	f := startFleet(t, sharedCluster(t), fleetOptions{nodes: 2, ports: 1})
	ev := watchEvents(t, f.nodes[0], "")
	be := startEcho(t, "A:")
	id := fmt.Sprintf("tcp/%d", f.portMin())
	if code, m := f.nodes[1].api("PUT", "/v1/streams/"+id, `{"backend":"`+be.addr()+`"}`); code != 201 && code != 200 {
		t.Fatalf("PUT through edge-2: %d %v", code, m)
	}
	ev.wait(0, "stream.created of edge-2's write", "stream.created", 10*time.Second, isStream(id))
	ev.wait(0, "status on edge-1", "stream.status", 10*time.Second, func(m map[string]any) bool {
		return m["id"] == id && m["state"] == "active" && m["node"] == "edge-1"
	})

	mark := ev.last()
	f.nodes[1].stop()
	left := ev.wait(mark, "node.left", "node.left", 15*time.Second, func(m map[string]any) bool { return m["name"] == "edge-2" })
	if left.Data["api_url"] != f.nodes[1].url("") {
		t.Fatalf("node.left %v, want api_url %s", left.Data, f.nodes[1].url(""))
	}
	f.nodes[1].start()
	ev.wait(left.ID, "node.joined", "node.joined", 15*time.Second, func(m map[string]any) bool { return m["name"] == "edge-2" })
	if c := ev.count(0, "node.joined", func(m map[string]any) bool { return m["name"] == "edge-1" }); c != 0 {
		t.Fatal("a node published itself joining")
	}
}

// nginx's master killed: drift of kind master, the master started again
// (a reload event of op restart), and the drift repaired.
func TestEventsMasterKilled(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	ev := watchEvents(t, d, "types=drift.detected,drift.repaired,reload")
	if !d.signalNginx(syscall.SIGKILL) {
		t.Fatal("no nginx master to kill")
	}
	isMaster := func(m map[string]any) bool { return m["kind"] == "master" }
	det := ev.wait(0, "drift.detected of the master", "drift.detected", 10*time.Second, isMaster)
	rl := ev.wait(det.ID, "the master restarted", "reload", 10*time.Second, nil)
	if rl.Data["op"] != "restart" || rl.Data["outcome"] != "ok" || rl.Data["streams"] != float64(1) {
		t.Fatalf("reload %v, want a restart, ok, with 1 stream", rl.Data)
	}
	ev.wait(rl.ID, "drift.repaired of the master", "drift.repaired", 10*time.Second, isMaster)
	mustEcho(t, d.portMin, "A:")
}
