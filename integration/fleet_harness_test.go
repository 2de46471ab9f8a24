package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/internal/etcdtest"
)

// The fleet fixture: a 3-member etcd cluster on loopback and daemon nodes
// edge-1, edge-2, ... that share its state, each with its own data dir and
// managed nginx, serving its streams on its own loopback address
// (127.0.0.11, .12, ...).

// fleetNodeTTL is the nodes' lease: short, so that a killed node's name is
// free again soon after.
const fleetNodeTTL = "2s"

// The cluster the fleet tests share: started by the first that needs it,
// stopped when the run ends (stopSharedCluster, from runTests). Tests that
// kill members start their own (startCluster).
var shared struct {
	sync.Mutex
	cluster *etcdtest.Cluster
	dir     string
	err     error
}

// sharedCluster is the cluster the fleet tests share; each keeps its keys
// under its own ETCD_PREFIX and never kills a member of it.
func sharedCluster(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.cluster == nil && shared.err == nil {
		shared.dir, shared.err = os.MkdirTemp("", "sc-fleet-etcd-")
		if shared.err == nil {
			shared.cluster, shared.err = etcdtest.StartCluster(shared.dir, 3)
		}
	}
	if shared.err != nil {
		noEtcd(t, shared.err)
	}
	return shared.cluster
}

// stopSharedCluster stops the shared cluster, if a test started it.
func stopSharedCluster() {
	shared.Lock()
	defer shared.Unlock()
	if shared.cluster != nil {
		shared.cluster.Stop()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

// startCluster starts a 3-member cluster of the test's own.
func startCluster(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	c, err := etcdtest.StartCluster(t.TempDir(), 3)
	if err != nil {
		noEtcd(t, err)
	}
	t.Cleanup(c.Stop)
	return c
}

// noEtcd fails the test on err, or skips it when etcd is not installed
// and CI is not set.
func noEtcd(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" || !errors.Is(err, etcdtest.ErrNoEtcd) {
		t.Fatalf("etcd cluster: %v", err)
	}
	t.Skipf("etcd: %v", err)
}

// fleet is a fleet of daemon nodes on one etcd prefix.
type fleet struct {
	t       *testing.T
	cluster *etcdtest.Cluster
	prefix  string
	nodes   []*daemon
	ips     []string // node i serves its streams on ips[i]
}

// fleetOptions shape startFleet's fleet.
type fleetOptions struct {
	nodes int // default 3
	ports int // streams ports, shared by every node (default 4)
	// endpoints is node i's ETCD_ENDPOINTS (default: every member).
	endpoints func(i int) string
}

// startFleet starts o.nodes nodes, edge-1 ... edge-n, on cluster c under
// a prefix of the test's own, one after the other, each ready.
func startFleet(t *testing.T, c *etcdtest.Cluster, o fleetOptions) *fleet {
	t.Helper()
	if o.nodes == 0 {
		o.nodes = 3
	}
	if o.ports == 0 {
		o.ports = 4
	}
	if o.endpoints == nil {
		all := strings.Join(c.Endpoints(), ",")
		o.endpoints = func(int) string { return all }
	}
	f := &fleet{t: t, cluster: c, prefix: "/" + strings.ReplaceAll(t.Name(), "/", "_")}
	var portMin, portMax int
	for i := range o.nodes {
		ip := fmt.Sprintf("127.0.0.%d", 11+i)
		env := []string{"STATE_STORE=etcd", "ETCD_ENDPOINTS=" + o.endpoints(i), "ETCD_PREFIX=" + f.prefix,
			fmt.Sprintf("NODE_NAME=edge-%d", i+1), "NODE_TTL=" + fleetNodeTTL, "STREAM_BIND_ADDRESS=" + ip}
		var d *daemon
		if i == 0 {
			d = newDaemon(t, o.ports, env...)
			portMin, portMax = d.portMin, d.portMax
		} else {
			d = newDaemon(t, 0, append(env, fmt.Sprintf("PORT_RANGE=%d-%d", portMin, portMax))...)
			d.portMin, d.portMax = portMin, portMax
		}
		f.nodes = append(f.nodes, d)
		f.ips = append(f.ips, ip)
	}
	for _, d := range f.nodes {
		d.start()
	}
	return f
}

// portMin and portMax bound the ports every node serves.
func (f *fleet) portMin() int { return f.nodes[0].portMin }
func (f *fleet) portMax() int { return f.nodes[0].portMax }

// echoVia sends msg through node i's port and returns what came back.
func (f *fleet) echoVia(i, port int, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(f.ips[i], strconv.Itoa(port)), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return roundTrip(c, msg)
}

// forwards says whether bytes sent through node i's port come back from
// the backend tagged tag.
func (f *fleet) forwards(i, port int, tag string) bool {
	msg := fmt.Sprintf("fleet %d %d\n", port, time.Now().UnixNano())
	got, err := f.echoVia(i, port, msg)
	return err == nil && got == tag+msg
}

// refuses says whether node i refuses connections to port.
func (f *fleet) refuses(i, port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(f.ips[i], strconv.Itoa(port)), time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// waitForwards polls until port forwards to tag through each node named
// (every node when none is).
func (f *fleet) waitForwards(port int, tag string, within time.Duration, nodes ...int) {
	f.t.Helper()
	if len(nodes) == 0 {
		nodes = f.all()
	}
	for _, i := range nodes {
		eventually(f.t, fmt.Sprintf("port %d forwards to %q through edge-%d", port, tag, i+1), within,
			func() bool { return f.forwards(i, port, tag) })
	}
}

// waitRefuses polls until port refuses connections on each node named
// (every node when none is).
func (f *fleet) waitRefuses(port int, within time.Duration, nodes ...int) {
	f.t.Helper()
	if len(nodes) == 0 {
		nodes = f.all()
	}
	for _, i := range nodes {
		eventually(f.t, fmt.Sprintf("port %d refused by edge-%d", port, i+1), within,
			func() bool { return f.refuses(i, port) })
	}
}

func (f *fleet) all() []int {
	out := make([]int, len(f.nodes))
	for i := range out {
		out[i] = i
	}
	return out
}

// relay is a TCP relay on a free loopback port to one etcd member, that a
// test cuts (every relayed connection closed, new ones refused) and
// restores.
type relay struct {
	t      *testing.T
	target string // host:port
	addr   string

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// startRelay relays a free loopback port to target (host:port) until the
// test ends.
func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	r.serve(ln)
	t.Cleanup(func() {
		r.Cut()
		r.wg.Wait()
	})
	return r
}

// URL is the relay's address as an etcd client URL.
func (r *relay) URL() string { return "http://" + r.addr }

// Cut closes every relayed connection and refuses new ones.
func (r *relay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for c := range r.conns {
		c.Close()
	}
	clear(r.conns)
}

// Restore accepts connections again, on the same port.
func (r *relay) Restore() {
	r.t.Helper()
	var ln net.Listener
	eventually(r.t, "the relay listens on "+r.addr+" again", 5*time.Second, func() bool {
		var err error
		ln, err = net.Listen("tcp4", r.addr)
		return err == nil
	})
	r.serve(ln)
}

func (r *relay) serve(ln net.Listener) {
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.pipe(c)
			}()
		}
	}()
}

// pipe relays c to the target until either side closes or the relay is
// cut.
func (r *relay) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", r.target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !r.track(c, up) {
		c.Close()
		up.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, up)
	r.mu.Unlock()
}

// track records a relayed pair, unless the relay was cut meanwhile.
func (r *relay) track(conns ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln == nil {
		return false
	}
	for _, c := range conns {
		r.conns[c] = struct{}{}
	}
	return true
}
