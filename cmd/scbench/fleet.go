package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// fleetConfig is what -fleet runs: the binaries, the stream ports, the
// sizes of the measurements and the raw-nginx floor.
type fleetConfig struct {
	daemonBin, etcdBin, nginxBin string
	lo, hi                       int
	samples, bulkN, bulkC        int
	rawStreams                   []int
	rawBase                      int
	backend                      string
}

// resolve finds the binaries (nginx and etcd from PATH when not given as
// paths) and parses -raw-streams.
func (c *fleetConfig) resolve(rawStreams string) error {
	if c.nginxBin == "" {
		c.nginxBin = "/usr/sbin/nginx"
		if p, err := exec.LookPath("nginx"); err == nil {
			c.nginxBin = p
		}
	}
	for _, b := range []*string{&c.etcdBin, &c.daemonBin} {
		p, err := exec.LookPath(*b)
		if err != nil {
			return fmt.Errorf("-fleet: %w (make build builds ./bin/stream-conductor; etcd comes with Debian's etcd-server)", err)
		}
		if *b, err = filepath.Abs(p); err != nil {
			return err
		}
	}
	for _, n := range strings.Split(rawStreams, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		count, err := strconv.Atoi(n)
		if err != nil {
			return fmt.Errorf("-raw-streams: %w", err)
		}
		c.rawStreams = append(c.rawStreams, count)
	}
	return nil
}

// The loopback addresses the fleet's nodes serve their streams on, and the
// single node's.
var (
	fleetAddrs = []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}
	singleAddr = "127.0.0.1"
)

// proc is a process the tool started and stops by its PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// node is a stream-conductor daemon of the run.
type node struct {
	name, addr, dataDir string
	p                   *proc
	b                   *bench
}

// fleet is everything -fleet started: a 3-member etcd cluster, 3 nodes on
// it and a single bbolt node, under one temporary directory.
type fleet struct {
	cfg      fleetConfig
	dir      string
	etcd     []*proc
	etcdURLs []string
	nodes    []*node
	single   *node
	stopOnce sync.Once
}

// runFleet starts the fleet and the single node, measures both in the
// same run, prints the results, and stops every process it started (also
// on SIGINT, SIGTERM, SIGHUP, SIGPIPE and on failure).
func runFleet(cfg fleetConfig) error {
	if cfg.hi-cfg.lo+1 < max(cfg.samples, cfg.bulkN) {
		return fmt.Errorf("-ports has %d ports: -fleet needs at least -samples and -bulk (%d)", cfg.hi-cfg.lo+1, max(cfg.samples, cfg.bulkN))
	}
	dir, err := os.MkdirTemp("", "scbench-fleet-")
	if err != nil {
		return err
	}
	os.Chmod(dir, 0o755) // nginx's workers (nobody under root) reach each DATA_DIR/traffic.sock
	f := &fleet{cfg: cfg, dir: dir}
	sigs := make(chan os.Signal, 1)
	// SIGPIPE too: output piped into a reader that went (head) would
	// otherwise end the tool before it stops what it started.
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Stop(sigs)
	go func() {
		if sig, ok := <-sigs; ok {
			f.stop()
			fmt.Fprintf(os.Stderr, "scbench: %v: stopped every process it started; logs in %s\n", sig, dir)
			os.Exit(1)
		}
	}()
	defer f.stop()
	if err := f.start(); err != nil {
		return fmt.Errorf("%w (logs in %s)", err, dir)
	}
	out := &bench{}
	if err := f.measure(out); err != nil {
		return fmt.Errorf("%w (logs in %s)", err, dir)
	}
	out.print()
	f.stop()
	os.RemoveAll(dir)
	return nil
}

// start starts the etcd cluster, the three nodes and the single node, and
// waits until each is ready.
func (f *fleet) start() error {
	if err := f.startEtcd(); err != nil {
		return err
	}
	etcdEnv := []string{"STATE_STORE=etcd", "ETCD_ENDPOINTS=" + strings.Join(f.etcdURLs, ","), "ETCD_PREFIX=/scbench"}
	for i, addr := range fleetAddrs {
		name := fmt.Sprintf("node-%d", i+1)
		n, err := f.startNode(name, addr, append(etcdEnv, "NODE_NAME="+name)...)
		if err != nil {
			return err
		}
		f.nodes = append(f.nodes, n)
	}
	n, err := f.startNode("single", singleAddr)
	if err != nil {
		return err
	}
	f.single = n
	return nil
}

// freePort is a loopback port free now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startProc starts bin with args and env (over this process's), its
// output in dir/name.log.
func (f *fleet) startProc(name string, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(f.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

// stop sends sig, waits at most within, then kills.
func (p *proc) stop(sig syscall.Signal, within time.Duration) {
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(within):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// startEtcd starts three etcd members of one new cluster on free loopback
// ports, and waits (at most 30s) until each reports healthy.
func (f *fleet) startEtcd() error {
	names := []string{"etcd-1", "etcd-2", "etcd-3"}
	var peers, clients []string
	for range names {
		c, err1 := freePort()
		p, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		clients = append(clients, fmt.Sprintf("http://127.0.0.1:%d", c))
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", p))
	}
	var cluster []string
	for i, n := range names {
		cluster = append(cluster, n+"="+peers[i])
	}
	for i, n := range names {
		p, err := f.startProc(n, nil, f.cfg.etcdBin, "--name", n, "--data-dir", filepath.Join(f.dir, n),
			"--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(cluster, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "scbench", "--max-txn-ops", "10000", "--logger", "zap", "--log-outputs", "stderr")
		if err != nil {
			return err
		}
		f.etcd = append(f.etcd, p)
	}
	f.etcdURLs = clients
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for i, u := range clients {
		for {
			if resp, err := hc.Get(u + "/health"); err == nil {
				body := make([]byte, 256)
				n, _ := resp.Body.Read(body)
				resp.Body.Close()
				if strings.Contains(string(body[:n]), `"health":"true"`) {
					break
				}
			}
			select {
			case <-f.etcd[i].done:
				return fmt.Errorf("%s exited during start-up (see %s)", names[i], f.etcd[i].log)
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not healthy within 30s (see %s)", names[i], f.etcd[i].log)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// startNode starts a daemon serving its streams on addr, its API on a
// free loopback port, and waits (at most 30s) until /readyz answers 200.
func (f *fleet) startNode(name, addr string, env ...string) (*node, error) {
	api, err := freePort()
	if err != nil {
		return nil, err
	}
	n := &node{name: name, addr: addr, dataDir: filepath.Join(f.dir, name)}
	if err := os.Mkdir(n.dataDir, 0o755); err != nil {
		return nil, err
	}
	env = append([]string{"DATA_DIR=" + n.dataDir, "NGINX_BIN=" + f.cfg.nginxBin, "BIND_ADDRESS=127.0.0.1",
		"BIND_PORT=" + strconv.Itoa(api), fmt.Sprintf("PORT_RANGE=%d-%d", f.cfg.lo, f.cfg.hi),
		"STREAM_BIND_ADDRESS=" + addr, "LOG_LEVEL=warn", "LOG_FORMAT=json", "APPLY_TIMEOUT=30s"}, env...)
	if n.p, err = f.startProc(name, env, f.cfg.daemonBin); err != nil {
		return nil, err
	}
	n.b = &bench{api: "http://127.0.0.1:" + strconv.Itoa(api), lo: f.cfg.lo, hi: f.cfg.hi, backend: f.cfg.backend,
		http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _, err := n.b.do("GET", "/readyz", ""); err == nil && code == 200 {
			return n, nil
		}
		select {
		case <-n.p.done:
			stopNginx(n.dataDir)
			return nil, fmt.Errorf("%s exited during start-up (see %s)", name, n.p.log)
		default:
		}
		if time.Now().After(deadline) {
			n.p.stop(syscall.SIGTERM, 15*time.Second)
			stopNginx(n.dataDir)
			return nil, fmt.Errorf("%s not ready within 30s (see %s)", name, n.p.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops the nodes (SIGTERM), their nginx masters and the etcd
// members, each by the PID the tool knows.
func (f *fleet) stop() {
	f.stopOnce.Do(func() {
		all := append(append([]*node{}, f.nodes...), f.single)
		for _, n := range all {
			if n == nil {
				continue
			}
			n.p.stop(syscall.SIGTERM, 15*time.Second)
			stopNginx(n.dataDir)
		}
		// The members at once: one stopped alone waits for the others.
		var wg sync.WaitGroup
		for _, p := range f.etcd {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.stop(syscall.SIGTERM, 10*time.Second)
			}()
		}
		wg.Wait()
	})
}

// nginxMaster is the PID of the nginx master of shard 0 a node's data dir
// names (DATA_DIR/nginx/nginx.pid), if that process is an nginx on this
// data dir (0 otherwise).
func nginxMaster(dataDir string) int {
	return masterOf(filepath.Join(dataDir, "nginx", "nginx.pid"), dataDir)
}

// nginxMasters are the PIDs of every nginx master of a node's pool:
// shard 0's (DATA_DIR/nginx/nginx.pid) and shard k's
// (DATA_DIR/nginx/shard-k/nginx.pid), each trusted as nginxMaster trusts
// shard 0's.
func nginxMasters(dataDir string) []int {
	files, _ := filepath.Glob(filepath.Join(dataDir, "nginx", "shard-*", "nginx.pid"))
	var out []int
	for _, f := range append([]string{filepath.Join(dataDir, "nginx", "nginx.pid")}, files...) {
		if pid := masterOf(f, dataDir); pid != 0 {
			out = append(out, pid)
		}
	}
	return out
}

// masterOf is the PID pidFile names if that process is an nginx master on
// dataDir (0 otherwise).
func masterOf(pidFile, dataDir string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if pid <= 0 || !strings.HasPrefix(string(cmdline), "nginx: master") || !strings.Contains(string(cmdline), dataDir) {
		return 0
	}
	return pid
}

// stopNginx stops every nginx master of a node (SIGTERM; SIGKILL after
// 10s).
func stopNginx(dataDir string) {
	var wg sync.WaitGroup
	for _, pid := range nginxMasters(dataDir) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			syscall.Kill(pid, syscall.SIGTERM)
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if syscall.Kill(pid, 0) != nil {
					return
				}
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}()
	}
	wg.Wait()
}
