package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/streamconductor/stream-conductor/internal/etcdconn"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ErrKilled: the member is not running (Kill stopped it; Restart starts it).
var ErrKilled = errors.New("etcd member is not running")

// Cluster is an etcd cluster of the tests: N members on free loopback
// ports, each with its data in a directory of its own. A member can be
// killed (SIGKILL) and restarted on the same data and ports.
type Cluster struct {
	members []*Member
}

// Member is one member of a Cluster: its name (m0, m1, ...), its client
// and peer URLs, and its process while it runs.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	bin       string
	args      []string
	log       string
	data      string // its data directory

	mu  sync.Mutex
	srv *Server // nil while killed
}

// StartCluster starts an n-member cluster with its data under dir (and
// flags after the tests', which take precedence) and waits (at most 30s)
// until every member reports healthy, so the cluster has a leader. A start
// that loses a port to another process is tried again with other ports,
// up to three times.
func StartCluster(dir string, n int, flags ...string) (*Cluster, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoEtcd, err)
	}
	var last error
	for attempt := range 3 {
		c, err := startCluster(bin, filepath.Join(dir, fmt.Sprint(attempt)), n, flags)
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

func startCluster(bin, dir string, n int, flags []string) (*Cluster, error) {
	c := &Cluster{}
	initial := make([]string, n)
	for i := range n {
		client, peer := FreeAddr(), FreeAddr()
		if client == "" || peer == "" {
			return nil, errors.New("no free loopback port")
		}
		m := &Member{Name: fmt.Sprintf("m%d", i), ClientURL: "http://" + client, PeerURL: "http://" + peer, bin: bin}
		initial[i] = m.Name + "=" + m.PeerURL
		c.members = append(c.members, m)
	}
	token := fmt.Sprintf("etcdtest-%d-%d", os.Getpid(), time.Now().UnixNano())
	for _, m := range c.members {
		mdir := filepath.Join(dir, m.Name)
		if err := os.MkdirAll(mdir, 0o700); err != nil {
			return nil, err
		}
		m.log = filepath.Join(mdir, "etcd.log")
		m.data = filepath.Join(mdir, "data")
		m.args = append([]string{"--name", m.Name, "--data-dir", m.data,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			"--max-txn-ops", "10000", "--logger", "zap", "--log-outputs", "stderr"}, flags...)
		if err := m.launch(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// launch starts the member's process (its log appended to).
func (m *Member) launch() error {
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(m.bin, m.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start etcd member %s: %w", m.Name, err)
	}
	srv := &Server{cmd: cmd, URL: m.ClientURL, exited: make(chan struct{}), log: m.log}
	go func() { cmd.Wait(); close(srv.exited) }()
	m.mu.Lock()
	m.srv = srv
	m.mu.Unlock()
	return nil
}

// server is the member's process, nil while killed.
func (m *Member) server() *Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.srv
}

// Running says whether the member's process runs.
func (m *Member) Running() bool { return m.server() != nil }

// waitHealthy waits until the member reports healthy (it has a leader and
// answers a linearizable read).
func (m *Member) waitHealthy(within time.Duration) error {
	srv := m.server()
	if srv == nil {
		return fmt.Errorf("%s: %w", m.Name, ErrKilled)
	}
	if err := srv.waitHealthy(within); err != nil {
		return fmt.Errorf("etcd member %s: %w; its log:\n%s", m.Name, err, srv.tail())
	}
	return nil
}

// Members are the cluster's members, in the order they were started.
func (c *Cluster) Members() []*Member { return c.members }

// Endpoints are the members' client URLs, for ETCD_ENDPOINTS.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.ClientURL
	}
	return out
}

// WaitHealthy waits until every running member reports healthy.
func (c *Cluster) WaitHealthy(within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, m := range c.members {
		if !m.Running() {
			continue
		}
		if err := m.waitHealthy(time.Until(deadline)); err != nil {
			return err
		}
	}
	return nil
}

// Kill kills member i with SIGKILL, as a crash or power cut would, and
// waits until it exited.
func (c *Cluster) Kill(i int) {
	m := c.members[i]
	m.mu.Lock()
	srv := m.srv
	m.srv = nil
	m.mu.Unlock()
	if srv == nil {
		return
	}
	srv.cmd.Process.Kill()
	<-srv.exited
}

// Restart starts member i again on its data and ports and waits (at most
// 20s) until it reports healthy: it rejoined the cluster. A start that
// finds a port still held is tried again, up to five times.
func (c *Cluster) Restart(i int) error {
	m := c.members[i]
	if m.Running() {
		return fmt.Errorf("etcd member %s runs already", m.Name)
	}
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for range 5 {
		if err := m.launch(); err != nil {
			return err
		}
		srv := m.server()
		if last = srv.waitHealthy(time.Until(deadline)); last == nil {
			return nil
		}
		c.Kill(i)
		if time.Now().After(deadline) {
			break
		}
	}
	return fmt.Errorf("restart etcd member %s: %w; its log:\n%s", m.Name, last, tailOf(m.log))
}

// Leader is the index of the member that leads the cluster, as the
// running members report it, or an error if none does within ctx.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	cli, err := c.Client()
	if err != nil {
		return -1, err
	}
	defer cli.Close()
	for {
		for _, m := range c.members {
			if !m.Running() {
				continue
			}
			st, err := cli.Status(ctx, m.ClientURL)
			if err != nil || st.Leader == 0 {
				continue
			}
			if st.Leader == st.Header.MemberId {
				return c.indexOf(m), nil
			}
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("no etcd member leads: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *Cluster) indexOf(m *Member) int {
	for i, o := range c.members {
		if o == m {
			return i
		}
	}
	return -1
}

// Client is a new client of every member.
func (c *Cluster) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, DialOptions: etcdconn.DialOptions(), Logger: zap.NewNop()})
}

// Stop kills every running member by its PID (SIGKILL: the cluster's
// data is the tests' and thrown away, and a graceful stop waits seconds
// on a member that is down) and waits until each exited.
func (c *Cluster) Stop() {
	for i := range c.members {
		c.Kill(i)
	}
}

// tailOf is the end of a log file.
func tailOf(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
