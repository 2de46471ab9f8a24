package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// Issue 15: a port range in the pool and in the traffic counts.

// listeningPortsOf returns the TCP ports process pid listens on.
func listeningPortsOf(t *testing.T, pid int) map[int]bool {
	t.Helper()
	inodes := map[string]bool{}
	procfs.Sockets(pid, func(inode string) { inodes[inode] = true })
	ports := map[int]bool{}
	procfs.Host.Accepting(false, func(s procfs.Socket) {
		if inodes[s.Inode] {
			ports[s.Port] = true
		}
	})
	return ports
}

// A master's size is its ports: one import (one listing, whose new
// streams fill one master up to the target size) of a 100-port range and
// ten single streams puts the range on one master and the singles on
// another, since the range alone is beyond the target (64 ports at
// least). Counted by streams, the range was one of 64 and all eleven
// went to one master. The masters' own listening sockets say which holds
// what, and bytes go through both.
func TestPoolPortsRangeWeighsItsPorts(t *testing.T) {
	t.Parallel()
	const rangePorts, singles = 100, 10
	d := startDaemon(t, rangePorts+singles, "NGINX_SHARDS=4")
	be := startEcho(t, "B:")
	a, b := d.portMin, d.portMin+rangePorts-1
	items := []string{fmt.Sprintf(`{"protocol":"tcp","listen":%d,"listen_end":%d,"port_mode":"fixed","backends":["%s"]}`, a, b, be.addr())}
	var single []int
	for p := b + 1; p <= b+singles; p++ {
		single = append(single, p)
		items = append(items, fmt.Sprintf(`{"protocol":"tcp","listen":%d,"backends":["%s"]}`, p, be.addr()))
	}
	if code, m := d.api("POST", "/v1/import", `{"streams":[`+strings.Join(items, ",")+`]}`); code != 200 || m["failed"] != nil {
		t.Fatalf("import: %d %v", code, m)
	}
	rk := d.shardOfPort(a)
	by := d.byShard(single)
	if rk < 0 || len(by) != 1 || by[rk] != nil {
		t.Fatalf("the range is on shard %d, the singles on %v: want the singles together on another shard", rk, by)
	}
	var sk int
	for k := range by {
		sk = k
	}
	rpid, spid := d.shardPID(rk), d.shardPID(sk)
	if rpid == 0 || spid == 0 || rpid == spid {
		t.Fatalf("masters %d (range) and %d (singles), want two", rpid, spid)
	}
	rheld, sheld := listeningPortsOf(t, rpid), listeningPortsOf(t, spid)
	for p := a; p <= b+singles; p++ {
		inRange := p <= b
		if rheld[p] != inRange || sheld[p] == inRange {
			t.Fatalf("port %d: held by the range's master %v, by the singles' %v; want it on the %s's only", p, rheld[p], sheld[p], map[bool]string{true: "range", false: "singles"}[inRange])
		}
	}
	mustEcho(t, a+rangePorts/2, "B:")
	mustEcho(t, single[0], "B:")
	sh := d.shards()
	if sh[rk].streams != 1 || sh[sk].streams != singles {
		t.Fatalf("/v1/status shards %+v: want 1 stream on %d and %d on %d", sh, rk, singles, sk)
	}
}

// One open session through a port_mode same range on 127.0.0.1 to a
// backend on 127.0.0.2 holds two sockets on the range's port (nginx's
// accepted one, and the backend's accepted one at 127.0.0.2); it is one
// session: the stream's traffic says active 1, not 2.
func TestPoolPortsActiveCountsASessionOnce(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 10, rangeBackendAllow)
	a, b := d.portMin, d.portMin+9
	startPortEchoes(t, a, b)
	ref := fmt.Sprintf("tcp/%d-%d", a, b)
	if code, m := d.api("PUT", "/v1/streams/"+ref, `{"backend":"127.0.0.2","port_mode":"same"}`); code != 201 {
		t.Fatalf("PUT the range: %d %v", code, m)
	}
	port := a + 4
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := "held open\n"
	if got, err := roundTrip(c, msg); err != nil || got != fmt.Sprintf("port %d: ", port)+msg {
		t.Fatalf("through port %d: %q %v", port, got, err)
	}
	// Both ends are established now (the backend answered): the first
	// count that sees the session sees all of it.
	var active float64
	eventually(t, "the open session counted", 10*time.Second, func() bool {
		_, m := d.api("GET", "/v1/streams/"+ref, "")
		tr, _ := m["traffic"].(map[string]any)
		active, _ = tr["active"].(float64)
		return active > 0
	})
	if active != 1 {
		t.Fatalf("traffic.active %v with one session open, want 1", active)
	}
}
