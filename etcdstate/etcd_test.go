package etcdstate

import (
	"context"
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

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// shared is the etcd server of the package's tests (nil: none, skipped),
// sharedClient a client of it; each test works under its own key prefix.
var (
	shared       *etcdServer
	sharedClient *clientv3.Client
	noEtcd       string // why there is no server
)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "etcdstate-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	srv, err := startEtcd(dir)
	if err != nil {
		noEtcd = err.Error()
		return m.Run() // every test that needs it fails under CI, else skips
	}
	defer srv.stop()
	cli, err := srv.client()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cli.Close()
	shared, sharedClient = srv, cli
	return m.Run()
}

// needEtcd fails the test under CI and skips it elsewhere when there is no
// etcd server.
func needEtcd(t *testing.T) {
	t.Helper()
	if shared != nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("no etcd server for the tests: %s", noEtcd)
	}
	t.Skipf("no etcd server for the tests: %s (scripts/install-deps.sh installs it)", noEtcd)
}

// etcdServer is an etcd process of the tests: one member on free loopback
// ports with its data in a directory of its own.
type etcdServer struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{}
	log    string
}

// startEtcd starts etcd with its data under dir (and flags after the
// tests', which take precedence) and waits (at most 20s)
// until it reports healthy. Ports are taken free and released just before
// etcd binds them, so a start that loses them to another process is tried
// again, up to three times.
func startEtcd(dir string, flags ...string) (*etcdServer, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("etcd is not installed: %w", err)
	}
	var last error
	for attempt := range 3 {
		srv, err := startEtcdOnce(bin, filepath.Join(dir, fmt.Sprint(attempt)), flags)
		if err == nil {
			return srv, nil
		}
		last = err
	}
	return nil, last
}

func startEtcdOnce(bin, dir string, flags []string) (*etcdServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	client, peer := freePort(), freePort()
	if client == "" || peer == "" {
		return nil, errors.New("no free loopback port")
	}
	clientURL, peerURL := "http://"+client, "http://"+peer
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
	srv := &etcdServer{cmd: cmd, url: clientURL, exited: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); close(srv.exited) }()
	if err := srv.waitHealthy(20 * time.Second); err != nil {
		srv.stop()
		return nil, fmt.Errorf("%w; its log:\n%s", err, srv.tail())
	}
	return srv, nil
}

// freePort is a loopback address with a port free now ("" if none).
func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer l.Close()
	return l.Addr().String()
}

// waitHealthy polls etcd's /health until it says true, etcd exits or the
// deadline passes.
func (s *etcdServer) waitHealthy(within time.Duration) error {
	deadline := time.After(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get(s.url + "/health")
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
			return fmt.Errorf("etcd at %s not healthy within %s", s.url, within)
		case <-tick.C:
		}
	}
}

// stop ends the etcd process by its PID: SIGTERM, then SIGKILL after 10s.
func (s *etcdServer) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// tail is the end of etcd's log.
func (s *etcdServer) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// client is a new client of the server (another node's connection).
func (s *etcdServer) client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{s.url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// newClient is a new client of the shared server, closed at the test's end.
func newClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := shared.client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// openState opens a State on cli under prefix, closed at the test's end.
func openState(t *testing.T, cli *clientv3.Client, prefix string, o Options) *State {
	t.Helper()
	st, err := Open(cli, prefix, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// rawGet reads key with the shared client.
func rawGet(t *testing.T, key string) *clientv3.GetResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := sharedClient.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
