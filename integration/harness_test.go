package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// binary is the daemon built once for the whole run.
var binary string

// nginxBin is the nginx the daemons run.
var nginxBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	for _, b := range []string{os.Getenv("NGINX_BIN"), "nginx", "/usr/sbin/nginx"} {
		if p, err := exec.LookPath(b); b != "" && err == nil {
			nginxBin = p
			break
		}
	}
	if nginxBin == "" {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "integration: nginx is not installed and CI=true; run scripts/install-deps.sh")
			return 1
		}
		fmt.Fprintln(os.Stderr, "integration: nginx is not installed; skipping the end-to-end tests")
		return 0
	}
	dir, err := os.MkdirTemp("", "sc-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Readable by all: some tests run the daemon as another user.
	os.Chmod(dir, 0o755)
	binary = filepath.Join(dir, "stream-conductor")
	build := exec.Command("go", "build", "-o", binary, "../cmd/stream-conductor")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: build:", err)
		return 1
	}
	defer stopSharedCluster()
	return m.Run()
}

// Ports: every test takes its own block of loopback ports, below the
// kernel's ephemeral range so that no outgoing connection collides.
var (
	portMu   sync.Mutex
	nextPort = 20000 + (os.Getpid()%50)*200
)

// reservePorts returns the first of n consecutive ports that are free for
// TCP and UDP now and that no other test of this run was given.
func reservePorts(t *testing.T, n int) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for tries := 0; tries < 200; tries++ {
		base := nextPort
		nextPort += n
		if nextPort > 32000 {
			nextPort = 20000
		}
		free := true
		for p := base; p < base+n && free; p++ {
			free = portFree(p)
		}
		if free {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

func portFree(p int) bool {
	l, err := net.Listen("tcp4", "0.0.0.0:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	c, err := net.ListenPacket("udp4", "0.0.0.0:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// daemon is one stream-conductor process with its data dir and nginx.
type daemon struct {
	t        *testing.T
	dataDir  string
	apiPort  int
	portMin  int
	portMax  int
	env      []string
	cmd      *exec.Cmd
	exited   chan struct{}
	logs     *syncBuffer
	client   *http.Client
	extraEnv []string
	// wrap runs the daemon through another command (unshare, setpriv...):
	// wrap[0] ... then the binary, exec'd so that the pid stays the same.
	wrap []string
	// credential, when set, runs the daemon as another user.
	credential *syscall.Credential
	readyPath  string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newDaemon prepares a daemon with ports streams ports; start runs it.
func newDaemon(t *testing.T, ports int, env ...string) *daemon {
	t.Helper()
	base := reservePorts(t, ports+1)
	d := &daemon{
		t:        t,
		dataDir:  t.TempDir(),
		apiPort:  base + ports,
		portMin:  base,
		portMax:  base + ports - 1,
		logs:     &syncBuffer{},
		client:   &http.Client{Timeout: 30 * time.Second},
		extraEnv: env,
	}
	// As in an install (/var/lib/stream-conductor is 0755): nginx's workers,
	// nobody when the daemon runs as root, must reach DATA_DIR/traffic.sock.
	os.Chmod(filepath.Dir(d.dataDir), 0o755)
	os.Chmod(d.dataDir, 0o755)
	t.Cleanup(func() {
		d.stop()
		d.stopNginx()
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.logs.String())
			if b, err := os.ReadFile(filepath.Join(d.dataDir, "nginx", "error.log")); err == nil {
				t.Logf("nginx error.log:\n%s", b)
			}
		}
	})
	return d
}

// startDaemon starts a daemon with a range of ports streams ports and
// waits until it is ready.
func startDaemon(t *testing.T, ports int, env ...string) *daemon {
	d := newDaemon(t, ports, env...)
	d.start()
	return d
}

func (d *daemon) url(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(d.apiPort) + path
}

func (d *daemon) start() {
	d.t.Helper()
	cmd := exec.Command(binary)
	if len(d.wrap) > 0 {
		cmd = exec.Command(d.wrap[0], append(d.wrap[1:], binary)...)
	}
	if d.credential != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: d.credential}
	}
	cmd.Env = append(os.Environ(),
		"DATA_DIR="+d.dataDir,
		"NGINX_BIN="+nginxBin,
		fmt.Sprintf("PORT_RANGE=%d-%d", d.portMin, d.portMax),
		"BIND_ADDRESS=127.0.0.1",
		"BIND_PORT="+strconv.Itoa(d.apiPort),
		"STREAM_BIND_ADDRESS=127.0.0.1",
		"LOG_FORMAT=json",
		"LOG_LEVEL=debug",
		"APPLY_TIMEOUT=10s",
		// One master, as the tests of single-master behaviour expect
		// (signalNginx, nginxPID); pool_test.go runs the default pool.
		"NGINX_SHARDS=1",
	)
	cmd.Env = append(cmd.Env, d.extraEnv...)
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.cmd = cmd
	d.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		close(d.exited)
	}()
	d.waitReady()
}

// startUnready starts the daemon and waits only for /healthz: for daemons
// that cannot be ready (no nginx, say).
func (d *daemon) startUnready() {
	d.t.Helper()
	saved := d.readyPath
	d.readyPath = "/healthz"
	defer func() { d.readyPath = saved }()
	d.start()
}

// kill9 kills the daemon with SIGKILL, as a crash or power cut would.
func (d *daemon) kill9() {
	d.t.Helper()
	d.cmd.Process.Kill()
	<-d.exited
	d.cmd = nil
}

func (d *daemon) waitReady() {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			d.t.Fatalf("daemon exited during start-up:\n%s", d.logs.String())
		default:
		}
		path := d.readyPath
		if path == "" {
			path = "/readyz"
		}
		if resp, err := d.client.Get(d.url(path)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.t.Fatalf("daemon not ready within 20s:\n%s", d.logs.String())
}

// stop ends the daemon with SIGTERM and waits for it; nginx keeps running.
func (d *daemon) stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("daemon did not stop on SIGTERM")
	}
	d.cmd = nil
}

// nginxPID is the pid of the nginx master this daemon runs, 0 if none.
func (d *daemon) nginxPID() int {
	b, err := os.ReadFile(filepath.Join(d.dataDir, "nginx", "nginx.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if cmdline := procfs.Cmdline(pid); !bytes.Contains(cmdline, []byte(d.dataDir)) {
		return 0 // not ours
	}
	return pid
}

// signalNginx sends sig to this daemon's nginx master, if there is one. It
// never signals pid 0, which would mean the whole process group.
func (d *daemon) signalNginx(sig syscall.Signal) bool {
	pid := d.nginxPID()
	if pid <= 0 {
		return false
	}
	return syscall.Kill(pid, sig) == nil
}

// stopNginx stops the nginx master this test's daemon started, by its pid.
func (d *daemon) stopNginx() {
	defer d.stopOrphans()
	pid := d.nginxPID()
	if pid <= 0 {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if p, err := procfs.Stat(pid); err != nil || p.Zombie() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

// stopOrphans kills every nginx process that still has a file of this
// test's data dir open (its error log): the workers a master killed with
// SIGKILL leaves behind.
func (d *daemon) stopOrphans() {
	ours := func(path string) bool { return strings.HasPrefix(path, d.dataDir+"/") }
	for _, pid := range procfs.Scan(func(p procfs.Proc, cmdline []byte) bool {
		return bytes.HasPrefix(cmdline, []byte("nginx: ")) && procfs.HoldsPath(p.PID, ours)
	}) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// api sends a request with an optional JSON body and decodes a JSON reply.
func (d *daemon) api(method, path, body string) (int, map[string]any) {
	d.t.Helper()
	code, raw := d.apiRaw(method, path, body)
	var m map[string]any
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &m); err != nil {
			d.t.Fatalf("%s %s: reply is not JSON: %v\n%s", method, path, err, raw)
		}
	}
	return code, m
}

func (d *daemon) apiRaw(method, path, body string) (int, []byte) {
	d.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, d.url(path), rd)
	if err != nil {
		d.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// mustPut creates or replaces a stream and requires it active.
func (d *daemon) mustPut(proto string, port int, body string) map[string]any {
	d.t.Helper()
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/%s/%d", proto, port), body)
	if code != 200 && code != 201 {
		d.t.Fatalf("PUT %s/%d: %d %v", proto, port, code, m)
	}
	if state := m["status"].(map[string]any)["state"]; state != "active" {
		d.t.Fatalf("PUT %s/%d answered with state %v", proto, port, state)
	}
	return m
}

// counters returns the reconciler's counters from /v1/status.
func (d *daemon) counters() map[string]float64 {
	d.t.Helper()
	_, m := d.api("GET", "/v1/status", "")
	out := map[string]float64{}
	for k, v := range m["reconciler"].(map[string]any)["counters"].(map[string]any) {
		out[k] = v.(float64)
	}
	return out
}

// nginxTest runs `nginx -t` on the daemon's managed configuration.
func (d *daemon) nginxTest() error {
	dir := filepath.Join(d.dataDir, "nginx")
	out, err := exec.Command(nginxBin, "-t", "-q", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// echoServer is a TCP backend that answers every read with its tag and
// the bytes read. With proxyProtocol it first reads a PROXY v1 header and
// records it.
type echoServer struct {
	ln      net.Listener
	tag     string
	proxy   bool
	mu      sync.Mutex
	headers []string
}

func startEcho(t *testing.T, tag string) *echoServer {
	return startEchoServer(t, tag, false)
}

func startEchoServer(t *testing.T, tag string, proxy bool) *echoServer {
	t.Helper()
	return startEchoOn(t, "127.0.0.1:0", tag, proxy)
}

// startEchoOn is an echo server on addr.
func startEchoOn(t *testing.T, addr, tag string, proxy bool) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("echo backend on %s: %v", addr, err)
	}
	e := &echoServer{ln: ln, tag: tag, proxy: proxy}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go e.serve(c)
		}
	}()
	return e
}

func (e *echoServer) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	if e.proxy {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		e.mu.Lock()
		e.headers = append(e.headers, line)
		e.mu.Unlock()
	}
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := c.Write(append([]byte(e.tag), buf[:n]...)); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (e *echoServer) addr() string { return e.ln.Addr().String() }

// udpEcho is a UDP backend answering each datagram with tag + datagram.
func startUDPEcho(t *testing.T, tag string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(tag), buf[:n]...), addr)
		}
	}()
	return pc.LocalAddr().String()
}

// echo opens a connection to 127.0.0.1:port, sends msg and returns what
// came back (tag + msg expected).
func echo(t *testing.T, port int, msg string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return roundTrip(c, msg)
}

func roundTrip(c net.Conn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.HasSuffix(got, []byte(msg)) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return string(got), err
		}
	}
	return string(got), nil
}

// mustEcho requires that bytes sent to port come back from the backend
// tagged tag.
func mustEcho(t *testing.T, port int, tag string) {
	t.Helper()
	msg := fmt.Sprintf("ping %d %d\n", port, time.Now().UnixNano())
	got, err := echo(t, port, msg)
	if err != nil || got != tag+msg {
		t.Fatalf("echo through port %d: got %q, %v; want %q", port, got, err, tag+msg)
	}
}

// waitRefused polls until connecting to port is refused.
func waitRefused(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("port %d still accepts connections", port)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if cond() {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %v", what, timeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// newRequest builds a request with an optional JSON body.
func newRequest(method, url, body string) (*http.Request, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err == nil && body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, err
}

// acceptEach accepts connections on ln until it is closed, counts each in
// n (when not nil) and serves it with serve on a goroutine of its own.
func acceptEach(ln net.Listener, n *atomic.Int64, serve func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if n != nil {
				n.Add(1)
			}
			go serve(c)
		}
	}()
}
