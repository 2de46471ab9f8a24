package reconcile

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// The probe of a range binds every port: one held port in the middle is
// named, worded like nginx's bind() message; two are both listed. The
// ports are held on a loopback address of this test's own, since the
// kernel hands ports of 127.0.0.1 to the outgoing connections of tests
// running beside it: a range there may hold a third port that is not ours.
func TestProbeRangeNamesHeldPorts(t *testing.T) {
	const addr = "127.81.47.9"
	hold := func(port int) (int, bool) {
		l, err := net.Listen("tcp4", addr+":"+strconv.Itoa(port))
		if err != nil {
			return 0, false
		}
		t.Cleanup(func() { l.Close() })
		return l.Addr().(*net.TCPAddr).Port, true
	}
	lo, ok := hold(0)
	if !ok {
		t.Fatal("no port free on " + addr)
	}
	hi := 0
	for port := lo + 2; port < lo+50 && hi == 0; port++ {
		hi, _ = hold(port)
	}
	if hi == 0 {
		t.Fatalf("none of the 48 ports above %d free on %s", lo, addr)
	}
	s := stream.Spec{Protocol: stream.TCP, Listen: lo - 1, ListenEnd: lo + 1, PortMode: stream.PortModeFixed}
	err := probeBind(s, addr)
	want := "bind() to " + addr + ":" + strconv.Itoa(lo) + " failed (98: Address already in use)"
	if err == nil || err.Error() != want {
		t.Errorf("one held port: %v, want %q", err, want)
	}
	s.ListenEnd = hi
	err = probeBind(s, addr)
	if err == nil || !strings.Contains(err.Error(), "2 ports of "+s.Ports()+" are held: "+strconv.Itoa(lo)+", "+strconv.Itoa(hi)) {
		t.Errorf("two held ports: %v", err)
	}
	s.Listen, s.ListenEnd = hi+1, hi+3
	if err := probeBind(s, addr); err != nil && !strings.Contains(err.Error(), "in use") {
		t.Errorf("free range: %v", err)
	}
}

// Every port of an applied range must be held; a missing one names the
// range's stream once.
func TestNotHeldCoversRanges(t *testing.T) {
	sp := stream.Spec{Protocol: stream.TCP, Listen: 10000, ListenEnd: 10009, PortMode: "same", Backends: []string{"10.0.0.5:10000"}}
	name, body, err := nginxconf.Render(sp, nil, nginxconf.RenderOptions{Prefix: "stream-"})
	if err != nil {
		t.Fatal(err)
	}
	_, one, _ := nginxconf.Render(stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"10.0.0.5:1"}}, nil, nginxconf.RenderOptions{Prefix: "stream-"})
	files := map[string][]byte{name: body, "stream-tcp-9000.conf": one}
	held := map[stream.ID]bool{{Protocol: stream.TCP, Port: 9000}: true}
	for p := 10000; p <= 10009; p++ {
		held[stream.ID{Protocol: stream.TCP, Port: p}] = true
	}
	if got := notHeld(fileOwners("stream-", files), held); len(got) != 0 {
		t.Errorf("all held: missing %v", got)
	}
	delete(held, stream.ID{Protocol: stream.TCP, Port: 10005})
	delete(held, stream.ID{Protocol: stream.TCP, Port: 10007})
	if got := notHeld(fileOwners("stream-", files), held); len(got) != 1 || got[0] != "tcp/10000" {
		t.Errorf("two ports of the range not held: missing %v, want [tcp/10000]", got)
	}
}

// nginx's bind() failure on any port of a range blames the range, at its
// address only.
func TestListensOnCoversRanges(t *testing.T) {
	r := &Reconciler{cfg: Config{Render: nginxconf.RenderOptions{DefaultBind: "127.0.0.1"}}}
	s := stream.Spec{Protocol: stream.TCP, Listen: 10000, ListenEnd: 10099}
	for addr, want := range map[string]bool{"127.0.0.1:10000": true, "127.0.0.1:10050": true, "127.0.0.1:10099": true,
		"127.0.0.1:10100": false, "127.0.0.2:10050": false, "127.0.0.1:9999": false} {
		if got := r.listensOn(s, addr); got != want {
			t.Errorf("listensOn(%s) = %v", addr, got)
		}
	}
}

// The open-file budget counts a range's every port.
func TestOverLimitCountsPorts(t *testing.T) {
	r := &Reconciler{cfg: Config{OpenFiles: &stream.OpenFiles{Soft: 1024, Hard: 1024, MaxStreams: 100}}}
	if err := r.overLimit(50, 50); err != nil {
		t.Errorf("50 ports beside 50: %v", err)
	}
	if err := r.overLimit(50, 51); err == nil {
		t.Error("a 51-port range beside 50 ports fits a budget of 100")
	}
	if n := listeningPorts([]stream.Spec{{Listen: 1}, {Listen: 10, ListenEnd: 19}}); n != 11 {
		t.Errorf("listeningPorts = %d, want 11", n)
	}
}

// A range nginx serves that grows probes only the ports it adds.
func TestPortsAdded(t *testing.T) {
	r := &Reconciler{cfg: Config{Render: nginxconf.RenderOptions{Prefix: "stream-"}}}
	old := stream.Spec{Protocol: stream.TCP, Listen: 10000, ListenEnd: 10009, PortMode: "same", Backends: []string{"10.0.0.5:10000"}}
	name, body, err := nginxconf.Render(old, nil, r.cfg.Render)
	if err != nil {
		t.Fatal(err)
	}
	onDisk := map[string][]byte{name: body}
	grown := old
	grown.ListenEnd = 10019
	if probe, ok := r.portsAdded(grown, onDisk); !ok || probe.Listen != 10010 || probe.LastPort() != 10019 {
		t.Errorf("grown: %v %s", ok, probe.Ports())
	}
	if _, ok := r.portsAdded(old, onDisk); ok {
		t.Error("the same range probes ports")
	}
	shrunk := old
	shrunk.ListenEnd = 10005
	if _, ok := r.portsAdded(shrunk, onDisk); ok {
		t.Error("a shrunk range probes ports")
	}
	if _, ok := r.portsAdded(old, map[string][]byte{}); ok {
		t.Error("a stream without a file probes ports")
	}
}
