// Package etcdtest starts etcd servers for tests: the etcd binary (Debian's
// etcd-server, installed by scripts/install-deps.sh), one member on free
// loopback ports, its data in a directory the test gives, stopped by its
// PID.
package etcdtest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/internal/etcdconn"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ErrNoEtcd: the etcd binary is not installed.
var ErrNoEtcd = errors.New("etcd is not installed (scripts/install-deps.sh installs it)")

// Server is an etcd process of the tests: one member on free loopback
// ports with its data in a directory of its own. URL is its client URL.
type Server struct {
	cmd    *exec.Cmd
	URL    string
	exited chan struct{}
	log    string
	tls    *tls.Config // a client's, when etcd serves TLS
	bin    string      // what Restart runs again (restart.go)
	args   []string
	data   string
}

// Start starts etcd with its data under dir (and flags after the
// tests', which take precedence) and waits (at most 20s)
// until it reports healthy. Ports are taken free and released just before
// etcd binds them, so a start that loses them to another process is tried
// again, up to three times.
func Start(dir string, flags ...string) (*Server, error) {
	return start(dir, nil, flags)
}

func start(dir string, tlsc *tls.Config, flags []string) (*Server, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoEtcd, err)
	}
	var last error
	for attempt := range 3 {
		srv, err := startOnce(bin, filepath.Join(dir, fmt.Sprint(attempt)), tlsc, flags)
		if err == nil {
			return srv, nil
		}
		last = err
	}
	return nil, last
}

func startOnce(bin, dir string, tlsc *tls.Config, flags []string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	client, peer := FreeAddr(), FreeAddr()
	if client == "" || peer == "" {
		return nil, errors.New("no free loopback port")
	}
	clientURL, peerURL := "http://"+client, "http://"+peer
	if tlsc != nil {
		clientURL = "https://" + client
	}
	logPath := filepath.Join(dir, "etcd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{"--name", "test", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "test=" + peerURL, "--initial-cluster-state", "new",
		"--max-txn-ops", "10000", "--logger", "zap", "--log-outputs", "stderr"}
	cmd := exec.Command(bin, append(args, flags...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	srv := &Server{cmd: cmd, URL: clientURL, exited: make(chan struct{}), log: logPath, tls: tlsc,
		bin: bin, args: cmd.Args[1:], data: filepath.Join(dir, "data")}
	go func() { cmd.Wait(); close(srv.exited) }()
	if err := srv.waitHealthy(20 * time.Second); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("%w; its log:\n%s", err, srv.tail())
	}
	return srv, nil
}

// FreeAddr is a loopback address with a port free now ("" if none).
func FreeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer l.Close()
	return l.Addr().String()
}

// waitHealthy polls etcd's /health until it says true, etcd exits or the
// deadline passes.
func (s *Server) waitHealthy(within time.Duration) error {
	deadline := time.After(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: s.tls}}
	for {
		resp, err := hc.Get(s.URL + "/health")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), `"health":"true"`) {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("etcd exited: %v", s.cmd.ProcessState)
		case <-deadline:
			return fmt.Errorf("etcd at %s not healthy within %s", s.URL, within)
		case <-tick.C:
		}
	}
}

// Stop ends the etcd process by its PID: SIGTERM, then SIGKILL after 10s.
func (s *Server) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// tail is the end of etcd's log.
func (s *Server) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Client is a new client of the server (another node's connection).
func (s *Server) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{s.URL}, DialTimeout: 5 * time.Second, DialOptions: etcdconn.DialOptions(), TLS: s.tls, Logger: zap.NewNop()})
}

// StartForTest starts etcd for t with its data in t's temp dir (flags
// after the defaults) and stops it when t ends. When etcd is not
// installed it fails t under CI=true and skips it elsewhere.
func StartForTest(t testing.TB, flags ...string) *Server {
	t.Helper()
	srv, err := Start(t.TempDir(), flags...)
	if err != nil {
		if os.Getenv("CI") == "true" || !errors.Is(err, ErrNoEtcd) {
			t.Fatalf("etcd: %v", err)
		}
		t.Skipf("etcd: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
}
