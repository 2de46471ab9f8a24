package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// requireTool skips when a tool a test needs is missing, except in CI.
func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is needed and CI=true", name)
		}
		t.Skipf("%s is not installed", name)
	}
}

// requireRoot skips a test that needs root when it runs without, except in
// CI, where it fails: CI runs as root, so every such test must run there.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs root %s, and CI=true", why)
	}
	t.Skipf("needs root %s", why)
}

// A backend name that stops resolving while the node is down (a reboot
// with another /etc/hosts): on start only that stream fails, the others
// forward, and it recovers by itself once the name resolves again. The
// daemon and its nginx run in a private mount namespace whose /etc/hosts
// is the test's file.
func TestUnresolvableBackendAfterRestartRecovers(t *testing.T) {
	t.Parallel()
	requireTool(t, "unshare")
	requireRoot(t, "for a private /etc/hosts")
	hosts := filepath.Join(t.TempDir(), "hosts")
	named := "127.0.0.1 localhost\n127.0.0.1 sc-backend.test\n"
	if err := os.WriteFile(hosts, []byte(named), 0o644); err != nil {
		t.Fatal(err)
	}
	d := newDaemon(t, 3, "RESYNC_INTERVAL=1s")
	d.wrap = []string{"unshare", "-m", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$1"`, hosts}
	d.start()
	be := startEcho(t, "A:")
	_, bePort, _ := net.SplitHostPort(be.addr())
	d.mustPut("tcp", d.portMin, `{"backend":"sc-backend.test:`+bePort+`"}`)
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin, "A:")

	// "Reboot": the daemon and nginx go; the name no longer resolves.
	d.stop()
	d.stopNginx()
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start()
	_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
	st := m["status"].(map[string]any)
	if st["state"] != "failed" || !strings.Contains(st["error"].(string), `host not found in upstream "sc-backend.test"`) {
		t.Fatalf("stream with the lost name: %v", st)
	}
	mustEcho(t, d.portMin+1, "A:")
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), ""); code != 200 {
		t.Fatal("a stream that was active and then failed must stay in the store")
	}

	if err := os.WriteFile(hosts, []byte(named), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stream active again once its name resolves", 15*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
		return m["status"].(map[string]any)["state"] == "active"
	})
	mustEcho(t, d.portMin, "A:")
}

// kill -9 of the daemon in the middle of concurrent writes loses no
// acknowledged write, and leaves no half-written file for nginx.
func TestDaemonKill9DuringWritesLosesNoAcknowledgedWrite(t *testing.T) {
	t.Parallel()
	const writers, portsEach = 6, 4
	d := startDaemon(t, writers*portsEach)
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	backends := []string{a.addr(), b.addr()}

	// Per port: the state of the last acknowledged write, and of a write
	// that was in flight at the kill ("" means absent).
	type portState struct{ acked, inflight string }
	var mu sync.Mutex
	states := map[int]*portState{}
	acks := 0
	killed := make(chan struct{})
	var wg sync.WaitGroup
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(w)))
			for op := 0; op < 200; op++ {
				port := d.portMin + w*portsEach + rng.IntN(portsEach)
				want, method, body := "", "DELETE", ""
				if rng.IntN(4) > 0 {
					want = backends[rng.IntN(2)]
					method, body = "PUT", `{"backend":"`+want+`"}`
				}
				mu.Lock()
				ps := states[port]
				if ps == nil {
					ps = &portState{}
					states[port] = ps
				}
				ps.inflight = want
				mu.Unlock()
				req, _ := newRequest(method, d.url(fmt.Sprintf("/v1/streams/tcp/%d", port)), body)
				resp, err := d.client.Do(req)
				if err != nil {
					return // the daemon is gone; this write's fate is unknown
				}
				resp.Body.Close()
				mu.Lock()
				ok := resp.StatusCode < 300 || (method == "DELETE" && resp.StatusCode == 404)
				if ok {
					ps.acked, ps.inflight = want, want
					acks++
				} else {
					ps.inflight = ps.acked
				}
				mu.Unlock()
				select {
				case <-killed:
					return
				default:
				}
			}
		}()
	}
	eventually(t, "40 acknowledged writes", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return acks >= 40
	})
	d.kill9()
	close(killed)
	wg.Wait()

	d.start()
	_, m := d.api("GET", "/v1/streams", "")
	got := map[int]string{}
	for _, s := range m["streams"].([]any) {
		s := s.(map[string]any)
		got[int(s["listen"].(float64))] = s["backends"].([]any)[0].(string)
		if st := s["status"].(map[string]any)["state"]; st != "active" {
			t.Errorf("stream %v is %v after the restart", s["id"], st)
		}
	}
	lost := 0
	for port, ps := range states {
		if got[port] != ps.acked && got[port] != ps.inflight {
			lost++
			t.Errorf("port %d: store has %q, the last acknowledged write said %q (in flight: %q)", port, got[port], ps.acked, ps.inflight)
		}
	}
	// Files: exactly one per stream, nothing half-written.
	entries, _ := os.ReadDir(filepath.Join(d.dataDir, "stream.d"))
	if len(entries) != len(got) {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%d files for %d streams: %v", len(entries), len(got), names)
	}
	for port, backend := range got {
		tag := "A:"
		if backend == b.addr() {
			tag = "B:"
		}
		mustEcho(t, port, tag)
	}
	t.Logf("kill -9 during writes: %d acknowledged writes, %d ports, lost = %d", acks, len(states), lost)
}

// A damaged state file stops start-up with a message naming the file and
// how to restore; the daemon never starts with an empty state.
func TestCorruptedStateFileStopsStartup(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	d.stop()
	path := filepath.Join(d.dataDir, "state.db")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8192 && i < len(b); i++ {
		b[i] = 0x5A
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "DATA_DIR="+d.dataDir, "NGINX_BIN="+nginxBin, "BIND_PORT="+strconv.Itoa(d.apiPort),
		fmt.Sprintf("PORT_RANGE=%d-%d", d.portMin, d.portMax), "LOG_FORMAT=json")
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the daemon started on a damaged state file")
	}
	if err == nil || !strings.Contains(string(out), path) || !strings.Contains(string(out), "restore a backup") {
		t.Fatalf("start on a damaged file: %v\n%s", err, out)
	}
	after, _ := os.ReadFile(path)
	if len(after) != len(b) {
		t.Fatal("the damaged file was replaced")
	}
	// nginx, untouched, keeps forwarding meanwhile.
	mustEcho(t, d.portMin, "A:")
}

// A read-only STREAM_CONFIG_PATH: the API keeps answering, /readyz says
// why, the store keeps the write and the live streams keep forwarding;
// once writable again it all applies by itself. The daemon runs as nobody,
// since root ignores permissions.
func TestReadOnlyConfigDirThenWritable(t *testing.T) {
	t.Parallel()
	d := newDaemon(t, 2, "APPLY_TIMEOUT=2s")
	if os.Geteuid() == 0 {
		d.credential = &syscall.Credential{Uid: 65534, Gid: 65534}
		for _, p := range []string{filepath.Dir(d.dataDir), d.dataDir} {
			os.Chmod(p, 0o755)
		}
		os.Chown(d.dataDir, 65534, 65534)
	}
	d.start()
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	dir := filepath.Join(d.dataDir, "stream.d")
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), `{"backend":"`+be.addr()+`"}`)
	if code != 503 {
		t.Fatalf("write to a read-only config dir: %d %v", code, m)
	}
	code, m = d.api("GET", "/readyz", "")
	if code != 503 || !strings.Contains(fmt.Sprint(m["reasons"]), "permission denied") {
		t.Fatalf("/readyz: %d %v", code, m)
	}
	mustEcho(t, d.portMin, "A:")
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), ""); code != 200 {
		t.Fatal("the write was lost")
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pending stream applied", 20*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), "")
		return m["status"].(map[string]any)["state"] == "active"
	})
	mustEcho(t, d.portMax, "A:")
	if code, _ := d.api("GET", "/readyz", ""); code != 200 {
		t.Fatal("not ready after recovery")
	}
}

// No nginx binary at NGINX_BIN: the API answers, /readyz says why, writes
// are kept; once nginx is there the daemon starts it and applies them.
func TestMissingNginxBinaryThenInstalled(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "nginx")
	d := newDaemon(t, 2, "NGINX_BIN="+bin, "APPLY_TIMEOUT=1s")
	d.startUnready()
	// The API answers before the first pass has failed: wait for its word.
	var code int
	var m map[string]any
	eventually(t, "/readyz naming the missing binary", 10*time.Second, func() bool {
		code, m = d.api("GET", "/readyz", "")
		return code != 200 && strings.Contains(fmt.Sprint(m["reasons"]), bin)
	})
	if code != 503 {
		t.Fatalf("/readyz without nginx: %d %v", code, m)
	}
	be := startEcho(t, "A:")
	code, m = d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), `{"backend":"`+be.addr()+`"}`)
	if code != 503 || m["stream"] == nil {
		t.Fatalf("write without nginx: %d %v", code, m)
	}
	if err := os.Symlink(nginxBin, bin); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready once nginx is installed", 40*time.Second, func() bool {
		code, _ := d.api("GET", "/readyz", "")
		return code == 200
	})
	mustEcho(t, d.portMin, "A:")
}

// External mode: an operator's file that breaks `nginx -t` makes the
// daemon degraded, not destructive: our last good files stay, nginx keeps
// forwarding, and it recovers once the file is fixed.
func TestForeignFileBreakingExternalNginx(t *testing.T) {
	t.Parallel()
	sn := startSystemNginx(t)
	d := sn.daemon(t, 2, "APPLY_TIMEOUT=2s")
	d.start()
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	foreign := filepath.Join(sn.streams, "operator.conf")
	if err := os.WriteFile(foreign, []byte("this is not nginx config;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), `{"backend":"`+be.addr()+`"}`)
	e, _ := m["error"].(map[string]any)
	if code != 503 || e["code"] != "nginx_unavailable" || !strings.Contains(fmt.Sprint(e["message"]), "operator.conf") {
		t.Fatalf("write while a foreign file breaks nginx -t: %d %v", code, m)
	}
	if _, err := os.Stat(filepath.Join(sn.streams, fmt.Sprintf("stream-tcp-%d.conf", d.portMax))); !os.IsNotExist(err) {
		t.Fatal("a file nginx has not accepted was left in place")
	}
	if code, m := d.api("GET", "/readyz", ""); code != 503 || !strings.Contains(fmt.Sprint(m["reasons"]), "unknown directive") {
		t.Fatalf("/readyz: %d %v", code, m)
	}
	mustEcho(t, d.portMin, "A:")
	if err := os.Remove(foreign); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stream applied once the foreign file is gone", 40*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), "")
		return m["status"].(map[string]any)["state"] == "active"
	})
	mustEcho(t, d.portMax, "A:")
}

// worker_shutdown_timeout keeps reloads from piling up old workers that
// hold open connections. The figure goes in the closing note.
func TestOldWorkersDoNotPileUp(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1, "NGINX_WORKER_SHUTDOWN_TIMEOUT=2s")
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMin))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := roundTrip(c, "hold\n"); err != nil {
			t.Fatal(err)
		}
		d.mustPut("tcp", d.portMin, fmt.Sprintf(`{"backend":"%s","connect_timeout":"%ds"}`, be.addr(), 5+i%2))
	}
	peak := d.nginxWorkers()
	eventually(t, "old workers gone after worker_shutdown_timeout", 20*time.Second, func() bool {
		return d.nginxWorkers() <= runtimeWorkers()
	})
	t.Logf("nginx workers after 50 reloads with open connections: %d; %d once worker_shutdown_timeout (2s) passed", peak, d.nginxWorkers())
}

// nginxWorkers counts the worker processes of this daemon's nginx, old
// ones included: they share the master's session.
func (d *daemon) nginxWorkers() int {
	master := d.nginxPID()
	return len(procfs.Scan(func(p procfs.Proc, cmdline []byte) bool {
		return !p.Zombie() && p.PPID == master && bytes.HasPrefix(cmdline, []byte("nginx: worker process"))
	}))
}

// runtimeWorkers is what worker_processes auto gives on this machine.
func runtimeWorkers() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	n := strings.Count(string(b), "processor\t:")
	if n == 0 {
		n = 1
	}
	return n
}

// A full STREAM_CONFIG_PATH: like a read-only one, nothing is lost and it
// recovers once there is room. The daemon runs in a private mount
// namespace on a 64 KiB tmpfs; the test fills it through /proc/PID/root.
func TestFullConfigDirThenRoomAgain(t *testing.T) {
	t.Parallel()
	requireTool(t, "unshare")
	requireRoot(t, "to mount a tmpfs")
	d := newDaemon(t, 2, "APPLY_TIMEOUT=2s")
	dir := filepath.Join(d.dataDir, "stream.d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d.wrap = []string{"unshare", "-m", "sh", "-c", `mount -t tmpfs -o size=64k tmpfs "$0" && exec "$1"`, dir}
	d.start()
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)

	filler := fmt.Sprintf("/proc/%d/root%s/filler", d.cmd.Process.Pid, dir)
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for range 64 {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break // full
		}
	}
	f.Close()
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), `{"backend":"`+be.addr()+`"}`)
	if code != 503 {
		t.Fatalf("write to a full config dir: %d %v", code, m)
	}
	if code, m := d.api("GET", "/readyz", ""); code != 503 || !strings.Contains(fmt.Sprint(m["reasons"]), "no space left on device") {
		t.Fatalf("/readyz: %d %v", code, m)
	}
	mustEcho(t, d.portMin, "A:")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pending stream applied once there is room", 40*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), "")
		return m["status"].(map[string]any)["state"] == "active"
	})
	mustEcho(t, d.portMax, "A:")
}
