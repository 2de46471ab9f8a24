package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// rawNginx is an nginx the tool runs itself with nginx's stock settings
// (no worker_processes, worker_connections or buffer changes): the
// baseline stream-conductor is measured against.
type rawNginx struct {
	bin, dir string
	pid      int
}

// rawConns, when set, overrides the raw nginx's worker_connections.
var rawConns int

func startRawNginx(bin string, streams int, base int, backend string) (*rawNginx, error) {
	dir, err := os.MkdirTemp("", "scbench-raw-")
	if err != nil {
		return nil, err
	}
	n := &rawNginx{bin: bin, dir: dir}
	v, _ := exec.Command(bin, "-V").CombinedOutput()
	load := ""
	if bytes.Contains(v, []byte("--with-stream=dynamic")) {
		for _, f := range strings.Fields(string(v)) {
			if d, ok := strings.CutPrefix(f, "--modules-path="); ok {
				load = "load_module " + d + "/ngx_stream_module.so;\n"
			}
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "s"), 0o755); err != nil {
		return nil, err
	}
	// Stock settings, except worker_connections where 512 cannot even hold
	// the listening sockets ("512 worker_connections are not enough").
	events := "events {}"
	if streams+64 > 512 {
		events = fmt.Sprintf("events { worker_connections %d; }", streams+256)
	}
	if rawConns > 0 {
		events = fmt.Sprintf("events { worker_connections %d; }", rawConns)
	}
	conf := load + fmt.Sprintf("pid %s/nginx.pid;\nerror_log %s/error.log notice;\n%s\nstream { include %s/s/*.conf; }\n", dir, dir, events, dir)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	for i := 0; i < streams; i++ {
		if err := n.addStream(base+i, backend); err != nil {
			return nil, err
		}
	}
	if out, err := exec.Command(bin, "-p", dir, "-c", dir+"/nginx.conf", "-e", dir+"/error.log").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("start raw nginx: %v %s", err, out)
	}
	for i := 0; i < 1000 && n.pid == 0; i++ {
		b, _ := os.ReadFile(filepath.Join(dir, "nginx.pid"))
		n.pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(2 * time.Millisecond)
	}
	if n.pid == 0 {
		return nil, fmt.Errorf("raw nginx wrote no pid file")
	}
	return n, nil
}

func (n *rawNginx) addStream(port int, backend string) error {
	body := fmt.Sprintf("server { listen %d; proxy_pass %s; }\n", port, backend)
	return os.WriteFile(filepath.Join(n.dir, "s", strconv.Itoa(port)+".conf"), []byte(body), 0o644)
}

func (n *rawNginx) reload() error { return syscall.Kill(n.pid, syscall.SIGHUP) }

// stop stops the raw nginx and waits (at most 10 s) until its master is
// gone, so that its ports are free for whatever comes next.
func (n *rawNginx) stop() {
	if n.pid > 0 {
		syscall.Kill(n.pid, syscall.SIGTERM)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && alive(n.pid); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	os.RemoveAll(n.dir)
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// rawReloadToEcho measures what stream-conductor's create→ready is held
// against: nginx with streams blocks, a file for one more port, a reload,
// and the time until that port echoes. Samples are spaced like the
// isolated create→ready samples.
func rawReloadToEcho(bin string, streams, base, samples int, backend string) (map[string]any, error) {
	n, err := startRawNginx(bin, streams, base, backend)
	if err != nil {
		return nil, err
	}
	defer n.stop()
	var ds []time.Duration
	for i := 0; i < samples; i++ {
		port := base + streams + i
		start := time.Now()
		if err := n.addStream(port, backend); err != nil {
			return nil, err
		}
		if err := n.reload(); err != nil {
			return nil, err
		}
		ready, ok := waitEcho(port)
		if !ok {
			return nil, fmt.Errorf("raw nginx: port %d never forwarded", port)
		}
		ds = append(ds, ready.Sub(start))
		time.Sleep(300 * time.Millisecond)
	}
	t0 := time.Now()
	if out, err := exec.Command(bin, "-t", "-q", "-p", n.dir, "-c", n.dir+"/nginx.conf", "-e", n.dir+"/error.log").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("raw nginx -t: %v %s", err, out)
	}
	test := time.Since(t0)
	return map[string]any{"streams": streams, "samples": samples, "reload_to_echo_p50_ms": ms(pct(ds, 50)),
		"reload_to_echo_p95_ms": ms(pct(ds, 95)), "nginx_t_ms": ms(test)}, nil
}

// dataPath measures one connection's throughput (64 MiB each way through
// an echo) and the round trip of 1-byte messages on an open connection,
// through port.
func dataPath(port int) (gbps float64, rtt time.Duration, err error) {
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	const total = 64 << 20
	chunk := make([]byte, 256<<10)
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		for sent := 0; sent < total; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	if _, err := io.CopyN(io.Discard, c, total); err != nil {
		return 0, 0, err
	}
	if err := <-errc; err != nil {
		return 0, 0, err
	}
	gbps = float64(total) * 8 / time.Since(start).Seconds() / 1e9
	var rtts []time.Duration
	one := []byte{1}
	for i := 0; i < 2000; i++ {
		t := time.Now()
		if _, err := c.Write(one); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, one); err != nil {
			return 0, 0, err
		}
		rtts = append(rtts, time.Since(t))
	}
	return gbps, pct(rtts, 50), nil
}
