package integration

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// The pool of nginx masters (NGINX_SHARDS): each test drives the real
// binary with more than one master and checks what is per shard.

// shardInfo is one entry of /v1/status reconciler.shards.
type shardInfo struct {
	pid      int
	running  bool
	streams  int
	reloads  int
	draining bool
}

// shards returns /v1/status reconciler.shards by shard index (empty when
// only one master runs: the daemon then lists none).
func (d *daemon) shards() map[int]shardInfo {
	d.t.Helper()
	_, m := d.api("GET", "/v1/status", "")
	out := map[int]shardInfo{}
	list, _ := m["reconciler"].(map[string]any)["shards"].([]any)
	for _, e := range list {
		s := e.(map[string]any)
		dr, _ := s["draining"].(bool)
		out[int(s["shard"].(float64))] = shardInfo{pid: int(s["pid"].(float64)), running: s["running"].(bool),
			streams: int(s["streams"].(float64)), reloads: int(s["reloads"].(float64)), draining: dr}
	}
	return out
}

// streamDir is STREAM_CONFIG_PATH (its default, DATA_DIR/stream.d).
func (d *daemon) streamDir() string { return filepath.Join(d.dataDir, "stream.d") }

// shardStreamDir is the directory of shard k's stream files.
func (d *daemon) shardStreamDir(k int) string {
	if k == 0 {
		return d.streamDir()
	}
	return filepath.Join(d.streamDir(), "shard-"+strconv.Itoa(k))
}

// shardNginxDir is the directory of shard k's nginx.conf, pid file and log.
func (d *daemon) shardNginxDir(k int) string {
	if k == 0 {
		return filepath.Join(d.dataDir, "nginx")
	}
	return filepath.Join(d.dataDir, "nginx", "shard-"+strconv.Itoa(k))
}

// shardFile is the path of tcp stream port's file in shard k.
func (d *daemon) shardFile(k, port int) string {
	return filepath.Join(d.shardStreamDir(k), fmt.Sprintf("stream-tcp-%d.conf", port))
}

// shardOfPort returns the shard whose directory holds the file of tcp
// stream port, -1 when none does (and fails when two do).
func (d *daemon) shardOfPort(port int) int {
	d.t.Helper()
	found := -1
	for k := 0; k < 64; k++ {
		if _, err := os.Stat(d.shardFile(k, port)); err == nil {
			if found >= 0 {
				d.t.Fatalf("tcp/%d has a file in shard %d and in shard %d", port, found, k)
			}
			found = k
		}
	}
	return found
}

// byShard groups ports by the shard whose directory holds their file.
func (d *daemon) byShard(ports []int) map[int][]int {
	d.t.Helper()
	out := map[int][]int{}
	for _, p := range ports {
		k := d.shardOfPort(p)
		if k < 0 {
			d.t.Fatalf("tcp/%d has no file in any shard", p)
		}
		out[k] = append(out[k], p)
	}
	return out
}

// shardPID is the pid of shard k's master from its pid file, 0 when there
// is none or it is not this daemon's.
func (d *daemon) shardPID(k int) int {
	b, err := os.ReadFile(filepath.Join(d.shardNginxDir(k), "nginx.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || !bytes.Contains(procfs.Cmdline(pid), []byte(d.dataDir)) {
		return 0
	}
	return pid
}

// alive reports whether pid runs (and is not a zombie).
func alive(pid int) bool {
	p, err := procfs.Stat(pid)
	return err == nil && !p.Zombie()
}

// putSpread creates one stream per port, one after the other, each to be,
// and requires that each forwards as soon as its PUT is answered.
func (d *daemon) putSpread(ports []int, be *echoServer, tag string) {
	d.t.Helper()
	for _, p := range ports {
		d.mustPut("tcp", p, `{"backend":"`+be.addr()+`"}`)
		mustEcho(d.t, p, tag)
	}
}

// spreadOver returns which shard holds each of ports, and the lowest
// shard above 0 that holds some; it requires several shards.
func (d *daemon) spreadOver(ports []int) (by map[int][]int, lowest int) {
	d.t.Helper()
	by = d.byShard(ports)
	lowest = -1
	for k := range by {
		if k > 0 && (lowest < 0 || k < lowest) {
			lowest = k
		}
	}
	if len(by) < 2 || lowest < 0 {
		d.t.Fatalf("streams on shard(s) %v, want several and one above 0", by)
	}
	return by, lowest
}

// portRange returns n ports from first.
func portRange(first, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = first + i
	}
	return out
}

// refusedNow requires that a connection to port is refused right now.
func refusedNow(t *testing.T, port int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("port %d accepts a connection right after its DELETE was answered", port)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("port %d: %v, want connection refused", port, err)
	}
}

// Sequential writes spread over several masters, each answered once its
// own stream forwards; a DELETE is answered once its port is closed; the
// status lists every master with its streams.
func TestPoolSpreadsAndForwards(t *testing.T) {
	t.Parallel()
	const n = 12
	d := startDaemon(t, n, "NGINX_SHARDS=16")
	be := startEcho(t, "A:")
	ports := portRange(d.portMin, n)
	d.putSpread(ports, be, "A:")

	by := d.byShard(ports)
	if len(by) < 2 {
		t.Fatalf("%d sequential PUTs all went to shard(s) %v, want more than one shard", n, by)
	}
	sh := d.shards()
	total := 0
	for k, ps := range by {
		s, ok := sh[k]
		if !ok || !s.running || s.pid <= 0 || s.pid != d.shardPID(k) || s.streams != len(ps) || s.draining {
			t.Fatalf("/v1/status shard %d: %+v (listed %v), want running with pid %d and %d streams", k, s, ok, d.shardPID(k), len(ps))
		}
		total += s.streams
	}
	for k, s := range sh {
		if _, used := by[k]; !used && s.streams != 0 {
			t.Fatalf("/v1/status shard %d has %d streams and no file", k, s.streams)
		}
	}
	if total != n {
		t.Fatalf("/v1/status shards count %d streams, want %d: %+v", total, n, sh)
	}
	for _, ps := range by {
		mustEcho(t, ps[0], "A:")
	}

	for _, p := range ports {
		k := d.shardOfPort(p)
		if code, m := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", p), ""); code != 204 {
			t.Fatalf("DELETE tcp/%d: %d %v", p, code, m)
		}
		refusedNow(t, p)
		if _, err := os.Stat(d.shardFile(k, p)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("tcp/%d's file in shard %d after its DELETE: %v", p, k, err)
		}
	}
}

// A restart of the daemon adopts every shard's running master: the same
// pids, no reload or start, and every stream forwards.
func TestPoolAdoptsWithoutReload(t *testing.T) {
	t.Parallel()
	const n = 6
	d := startDaemon(t, n, "NGINX_SHARDS=16")
	be := startEcho(t, "A:")
	ports := portRange(d.portMin, n)
	d.putSpread(ports, be, "A:")
	by := d.byShard(ports)
	if len(by) < 2 {
		t.Fatalf("streams on shard(s) %v only, want several", by)
	}
	pids := map[int]int{}
	for k := range by {
		if pids[k] = d.shardPID(k); pids[k] == 0 {
			t.Fatalf("shard %d has no master", k)
		}
	}

	d.stop()
	for k, pid := range pids {
		if !alive(pid) {
			t.Fatalf("shard %d's master %d exited with the daemon", k, pid)
		}
	}
	d.start()

	if c := d.counters(); c["nginx_reloads"] != 0 || c["nginx_starts"] != 0 || c["files_written"] != 0 || c["files_removed"] != 0 {
		t.Fatalf("the restart reloaded, started or wrote: %v", c)
	}
	sh := d.shards()
	for k, pid := range pids {
		if s := sh[k]; s.pid != pid || !s.running || s.reloads != 0 || s.streams != len(by[k]) {
			t.Fatalf("shard %d after the restart: %+v, want master %d, running, 0 reloads, %d streams", k, s, pid, len(by[k]))
		}
		if got := d.shardPID(k); got != pid {
			t.Fatalf("shard %d's pid file says %d, want the adopted %d", k, got, pid)
		}
	}
	for _, p := range ports {
		mustEcho(t, p, "A:")
		if state, msg := d.streamState(p); state != "active" {
			t.Fatalf("tcp/%d after the restart: %s %s", p, state, msg)
		}
	}
	if got := d.byShard(ports); !maps.EqualFunc(got, by, slices.Equal[[]int]) {
		t.Fatalf("streams moved across the restart: %v, were %v", got, by)
	}
}

// kill -9 of one shard's master: writes to the other shards go on while it
// is recovered, the killed shard gets a new master and its streams
// forward again, and the other masters are untouched.
func TestPoolShardMasterKilled(t *testing.T) {
	t.Parallel()
	const n = 8
	d := startDaemon(t, n+2, "NGINX_SHARDS=16")
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	ports := portRange(d.portMin, n)
	d.putSpread(ports, a, "A:")
	by, victim := d.spreadOver(ports)
	pids := map[int]int{}
	for k := range by {
		pids[k] = d.shardPID(k)
	}

	if err := syscall.Kill(pids[victim], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Writes to the streams of the other shards: answered, active, and
	// forwarding to the new backend at once.
	for k, ps := range by {
		if k == victim {
			continue
		}
		for _, p := range ps {
			start := time.Now()
			d.mustPut("tcp", p, `{"backend":"`+b.addr()+`"}`)
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("PUT tcp/%d on shard %d took %v while shard %d was down", p, k, took, victim)
			}
			mustEcho(t, p, "B:")
		}
	}
	// New streams go somewhere that works.
	for _, p := range []int{d.portMin + n, d.portMin + n + 1} {
		d.mustPut("tcp", p, `{"backend":"`+b.addr()+`"}`)
		mustEcho(t, p, "B:")
	}

	eventually(t, "a new master for the killed shard", 15*time.Second, func() bool {
		pid := d.shardPID(victim)
		return pid != 0 && pid != pids[victim] && alive(pid)
	})
	for _, p := range by[victim] {
		eventually(t, fmt.Sprintf("tcp/%d on the killed shard forwarding again", p), 15*time.Second, func() bool {
			got, err := echo(t, p, "x\n")
			return err == nil && got == "A:x\n"
		})
		if state, msg := d.streamState(p); state != "active" {
			t.Fatalf("tcp/%d after its master was restarted: %s %s", p, state, msg)
		}
		if k := d.shardOfPort(p); k != victim {
			t.Fatalf("tcp/%d moved from shard %d to %d", p, victim, k)
		}
	}
	sh := d.shards()
	for k, pid := range pids {
		if k == victim {
			if sh[k].pid != d.shardPID(k) || !sh[k].running {
				t.Fatalf("/v1/status of the restarted shard %d: %+v, want pid %d running", k, sh[k], d.shardPID(k))
			}
			continue
		}
		if got := d.shardPID(k); got != pid || sh[k].pid != pid {
			t.Fatalf("shard %d's master is %d (status %d), was %d: only shard %d's was killed", k, got, sh[k].pid, pid, victim)
		}
	}
}

// importOneShard creates the streams of ports in one import: the streams
// new in one listing fill one shard. It returns that shard.
func (d *daemon) importOneShard(ports []int, be *echoServer) int {
	d.t.Helper()
	var items []string
	for _, p := range ports {
		items = append(items, fmt.Sprintf(`{"protocol":"tcp","listen":%d,"backends":["%s"]}`, p, be.addr()))
	}
	if code, m := d.api("POST", "/v1/import", `{"streams":[`+strings.Join(items, ",")+`]}`); code != 200 || m["failed"] != nil {
		d.t.Fatalf("import: %d %v", code, m)
	}
	by := d.byShard(ports)
	if len(by) != 1 {
		d.t.Fatalf("one import spread over shards %v", by)
	}
	for k := range by {
		return k
	}
	return -1
}

// A stream nginx cannot bind fails in its own shard: it is failed with
// nginx's words, the other streams of its shard and of the other shards
// forward, the other shards do not reload for it (not even when resyncs
// retry it), and once its port is free it is applied in its shard.
func TestPoolQuarantineStaysInItsShard(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 6, "NGINX_SHARDS=16", "RESYNC_INTERVAL=1s")
	be := startEcho(t, "A:")
	group := portRange(d.portMin, 3)
	home := d.importOneShard(group, be)
	others := portRange(d.portMin+3, 3)
	d.putSpread(others, be, "A:")
	by := d.byShard(append(slices.Clone(group), others...))
	if len(by) < 2 {
		t.Fatalf("streams on shard(s) %v, want several", by)
	}
	bad := group[0]

	// While the daemon is down, its shard's master stops (its files stay,
	// so the stream stays in that shard) and another process binds the
	// port: at the start, the shard's new master cannot have it.
	d.stop()
	pid := d.shardPID(home)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, "shard's master stopped", 10*time.Second, func() bool { return !alive(pid) })
	squatter, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(bad))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()

	d.start()
	want := fmt.Sprintf("bind() to 127.0.0.1:%d failed (98: Address already in use)", bad)
	eventually(t, "the stream on the taken port failed", 10*time.Second, func() bool {
		state, msg := d.streamState(bad)
		return state == "failed" && strings.Contains(msg, want)
	})
	for _, p := range append(slices.Clone(group[1:]), others...) {
		mustEcho(t, p, "A:")
		if state, msg := d.streamState(p); state != "active" {
			t.Fatalf("tcp/%d (shard %d) beside the failed one: %s %s", p, d.shardOfPort(p), state, msg)
		}
	}
	// Resyncs (every second) retry the failed stream in its shard only.
	eventually(t, "a resync retrying the failed stream", 10*time.Second, func() bool {
		return strings.Count(d.logs.String(), want) >= 2
	})
	sh := d.shards()
	for k := range by {
		if k != home && sh[k].reloads != 0 {
			t.Fatalf("shard %d reloaded %d times for a stream of shard %d: %+v", k, sh[k].reloads, home, sh)
		}
	}

	// The port freed, the next resync applies the stream, in its shard.
	squatter.Close()
	eventually(t, "the stream active once its port is free", 15*time.Second, func() bool {
		state, _ := d.streamState(bad)
		return state == "active"
	})
	mustEcho(t, bad, "A:")
	if k := d.shardOfPort(bad); k != home {
		t.Fatalf("the recovered stream is in shard %d, was in %d", k, home)
	}
	sh = d.shards()
	for k := range by {
		if k != home && sh[k].reloads != 0 {
			t.Fatalf("shard %d reloaded %d times for a stream of shard %d: %+v", k, sh[k].reloads, home, sh)
		}
	}
}

// A hand edit of a stream file in one shard's directory is repaired by
// that shard alone: the file is restored, bytes reach the stored backend,
// and no other shard reloads.
func TestPoolDriftInOneShard(t *testing.T) {
	t.Parallel()
	const n = 6
	d := startDaemon(t, n, "NGINX_SHARDS=16")
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	ports := portRange(d.portMin, n)
	d.putSpread(ports, a, "A:")
	by, victim := d.spreadOver(ports)
	before := d.shards()
	port := by[victim][0]
	file := d.shardFile(victim, port)
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(want), a.addr(), b.addr(), 1)
	if edited == string(want) {
		t.Fatalf("no backend address %s in %s:\n%s", a.addr(), file, want)
	}
	if err := os.WriteFile(file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	// Even if someone reloads that master with the edit, it is undone.
	if err := syscall.Kill(d.shardPID(victim), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}

	eventually(t, "the file restored from the store", 10*time.Second, func() bool {
		b, err := os.ReadFile(file)
		return err == nil && bytes.Equal(b, want)
	})
	eventually(t, "the shard reloaded", 10*time.Second, func() bool {
		return d.shards()[victim].reloads > before[victim].reloads
	})
	eventually(t, "traffic to backend A again", 10*time.Second, func() bool {
		got, err := echo(t, port, "x\n")
		return err == nil && got == "A:x\n"
	})
	eventually(t, "the repair counted", 10*time.Second, func() bool {
		return d.counters()["drift_repairs"] >= 1
	})
	after := d.shards()
	for k := range by {
		if k != victim && after[k].reloads != before[k].reloads {
			t.Fatalf("shard %d reloaded for drift in shard %d: %+v -> %+v", k, victim, before, after)
		}
		if k != victim && after[k].pid != before[k].pid {
			t.Fatalf("shard %d's master changed for drift in shard %d", k, victim)
		}
	}
	for _, p := range ports {
		mustEcho(t, p, "A:")
	}
}

// Started again with fewer shards, the daemon moves the streams of the
// shards it no longer runs to the others, stops their masters and removes
// their directories.
func TestPoolShardsLowered(t *testing.T) {
	t.Parallel()
	const n = 8
	d := startDaemon(t, n, "NGINX_SHARDS=4")
	be := startEcho(t, "A:")
	ports := portRange(d.portMin, n)
	d.putSpread(ports, be, "A:")
	by := d.byShard(ports)
	pids := map[int]int{}
	for k := range by {
		if k >= 4 {
			t.Fatalf("a stream on shard %d with NGINX_SHARDS=4", k)
		}
		if k > 0 {
			pids[k] = d.shardPID(k)
		}
	}
	if len(pids) == 0 {
		t.Fatalf("streams on shard(s) %v, want some above shard 0", by)
	}

	d.stop()
	d.extraEnv = append(d.extraEnv, "NGINX_SHARDS=1")
	d.start()

	eventually(t, "every stream in shard 0, the other shards gone", 20*time.Second, func() bool {
		for _, p := range ports {
			if _, err := os.Stat(d.shardFile(0, p)); err != nil {
				return false
			}
		}
		for _, pid := range pids {
			if alive(pid) {
				return false
			}
		}
		left, _ := filepath.Glob(filepath.Join(d.streamDir(), "shard-*"))
		nginxLeft, _ := filepath.Glob(filepath.Join(d.dataDir, "nginx", "shard-*"))
		return len(left) == 0 && len(nginxLeft) == 0
	})
	eventually(t, "every stream forwarding from shard 0", 10*time.Second, func() bool {
		for _, p := range ports {
			if got, err := echo(t, p, "x\n"); err != nil || got != "A:x\n" {
				return false
			}
		}
		return true
	})
	for _, p := range ports {
		if k := d.shardOfPort(p); k != 0 {
			t.Fatalf("tcp/%d in shard %d after NGINX_SHARDS=1", p, k)
		}
	}
	eventually(t, "every moved stream's status active", 5*time.Second, func() bool {
		for _, p := range ports {
			if state, _ := d.streamState(p); state != "active" {
				return false
			}
		}
		return true
	})
	if sh := d.shards(); len(sh) != 0 {
		t.Fatalf("/v1/status still lists shards with one master: %+v", sh)
	}
}
