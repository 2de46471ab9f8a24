package traffic

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// specs is a stream list the tests change: a Lookup and SetStreams read it.
type specs struct {
	mu   sync.Mutex
	list map[stream.ID]stream.Spec
}

func (s *specs) lookup(id stream.ID) (Stream, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, ok := s.list[id]
	return Stream{Created: sp.CreatedAt, Last: sp.LastPort(), Listen: sp.ListenAddr("").Addr()}, ok
}

// put stores sp and hands the whole list to c, as the daemon does when
// the list changes.
func (s *specs) put(c *Collector, sp stream.Spec) {
	s.mu.Lock()
	s.list[sp.ID()] = sp
	s.mu.Unlock()
	s.feed(c)
}

func (s *specs) del(c *Collector, id stream.ID) {
	s.mu.Lock()
	delete(s.list, id)
	s.mu.Unlock()
	s.feed(c)
}

func (s *specs) feed(c *Collector) {
	s.mu.Lock()
	all := make([]stream.Spec, 0, len(s.list))
	for _, sp := range s.list {
		all = append(all, sp)
	}
	s.mu.Unlock()
	c.SetStreams(all)
}

func rangeCollector(t *testing.T) (*Collector, *specs) {
	t.Helper()
	s := &specs{list: map[stream.ID]stream.Spec{}}
	c, err := Listen(filepath.Join(t.TempDir(), "traffic.sock"), -1, s.lookup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, s
}

func session(port, out, in int) []byte {
	return []byte(fmt.Sprintf("x: %d TCP 127.0.0.1 10.0.0.5:%d %d %d 0.001 200", port, port, out, in))
}

var day = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// A session on any port of a range counts once for the range stream, and
// by port in Ports; a port outside every stream is dropped.
func TestRangeSessionsCountForTheRange(t *testing.T) {
	c, s := rangeCollector(t)
	s.put(c, stream.Spec{Protocol: stream.TCP, Listen: 10000, ListenEnd: 10099, CreatedAt: day})
	s.put(c, stream.Spec{Protocol: stream.TCP, Listen: 9000, CreatedAt: day})
	s.put(c, stream.Spec{Protocol: stream.UDP, Listen: 10200, ListenEnd: 10210, CreatedAt: day})
	now := time.Now()
	c.record(session(10000, 10, 1), now)
	c.record(session(10050, 20, 2), now)
	c.record(session(10050, 20, 2), now)
	c.record(session(10099, 30, 3), now)
	c.record(session(9000, 5, 5), now)
	for _, port := range []int{9999, 10100, 10205, 9001} { // outside every TCP stream
		c.record(session(port, 1000, 1000), now)
	}
	r := c.Get(stream.MustParseID("tcp/10000"))
	if r == nil || r.Sessions != 4 || r.BytesOut != 80 || r.BytesIn != 8 {
		t.Fatalf("tcp/10000-10099: %+v; want 4 sessions, 80 bytes out, 8 in", r)
	}
	want := map[int]PortStats{10000: {1, 1, 10}, 10050: {2, 4, 40}, 10099: {1, 3, 30}}
	if fmt.Sprint(r.Ports) != fmt.Sprint(want) {
		t.Fatalf("ports %v, want %v", r.Ports, want)
	}
	single := c.Get(stream.MustParseID("tcp/9000"))
	if single == nil || single.Sessions != 1 || single.Ports != nil {
		t.Fatalf("tcp/9000: %+v", single)
	}
	if b, _ := json.Marshal(single); strings.Contains(string(b), `"ports"`) {
		t.Fatalf("a single port shows ports: %s", b)
	}
	if b, _ := json.Marshal(r); !strings.Contains(string(b), `"ports":{"10000":{"sessions":1,"bytes_in":1,"bytes_out":10}`) {
		t.Fatalf("JSON %s", b)
	}
	if all := c.All(); len(all) != 2 {
		t.Fatalf("stats of %d streams, want the range and tcp/9000: %v", len(all), all)
	}
	if got := c.sample()["tcp/10000"]; got.Sessions != 4 || got.BytesOut != 80 {
		t.Fatalf("traffic event of the range: %+v", got)
	}
}

// A range deleted and created again starts from zero, ports included;
// one deleted for good counts nothing more, even before the index learns.
func TestRecreatedRangeStartsFromZero(t *testing.T) {
	c, s := rangeCollector(t)
	rng := stream.Spec{Protocol: stream.TCP, Listen: 10000, ListenEnd: 10019, CreatedAt: day}
	s.put(c, rng)
	now := time.Now()
	c.record(session(10005, 10, 1), now)
	c.record(session(10006, 10, 1), now)
	if r := c.Get(rng.ID()); r == nil || r.Sessions != 2 {
		t.Fatalf("before: %+v", r)
	}
	s.del(c, rng.ID())
	rng.CreatedAt = day.Add(time.Minute)
	s.put(c, rng)
	if r := c.Get(rng.ID()); r != nil && (r.Sessions != 0 || len(r.Ports) != 0) {
		t.Fatalf("the new range shows the old one's traffic: %+v", r)
	}
	c.record(session(10007, 7, 3), now)
	r := c.Get(rng.ID())
	if want := map[int]PortStats{10007: {1, 3, 7}}; r == nil || r.Sessions != 1 || fmt.Sprint(r.Ports) != fmt.Sprint(want) {
		t.Fatalf("after its first session, the new range has %+v", r)
	}
	// Deleted: the index still holds it until the next list, the Lookup
	// does not.
	s.mu.Lock()
	delete(s.list, rng.ID())
	s.mu.Unlock()
	c.record(session(10008, 7, 3), now)
	if all := c.All(); len(all) != 0 {
		t.Fatalf("a deleted range counts: %v", all)
	}
}

// The range holding a port is found among many streams by protocol.
func TestRangeIndexFind(t *testing.T) {
	var list []stream.Spec
	for i := range 10000 {
		list = append(list, stream.Spec{Protocol: stream.TCP, Listen: 20000 + i})
	}
	for i := range 100 {
		list = append(list, stream.Spec{Protocol: stream.TCP, Listen: 1000 + 100*i, ListenEnd: 1000 + 100*i + 49})
		list = append(list, stream.Spec{Protocol: stream.UDP, Listen: 1050 + 100*i, ListenEnd: 1050 + 100*i + 9})
	}
	idx := newRangeIndex(list)
	for _, tc := range []struct {
		p     stream.Protocol
		port  int
		first int
		ok    bool
	}{
		{stream.TCP, 1000, 1000, true}, {stream.TCP, 1049, 1000, true}, {stream.TCP, 1050, 0, false},
		{stream.UDP, 1050, 1050, true}, {stream.UDP, 1059, 1050, true}, {stream.UDP, 1060, 0, false},
		{stream.TCP, 10949, 10900, true}, {stream.TCP, 999, 0, false}, {stream.TCP, 20000, 0, false},
		{stream.UDP, 1000, 0, false}, {stream.UDP, 10959, 10950, true}, {stream.UDP, 65535, 0, false},
	} {
		if first, ok := idx.find(tc.p, tc.port); first != tc.first || ok != tc.ok {
			t.Errorf("%s/%d: %d %v, want %d %v", tc.p, tc.port, first, ok, tc.first, tc.ok)
		}
	}
}

// The open sessions of a range are those of its ports, however the
// socket table is spread.
func TestActiveOnSumsTheRangesPorts(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	open := openSockets{}
	for port, n := range map[int]int{9999: 5, 10000: 1, 10010: 2, 10019: 3, 10020: 7} {
		open[port] = map[netip.Addr]int{lo: n}
	}
	if n := activeOn(open, 10000, 10019, lo); n != 6 {
		t.Fatalf("%d open, want 6", n)
	}
	if n := activeOn(open, 10010, 10010, lo); n != 2 {
		t.Fatalf("%d open on one port, want 2", n)
	}
}

// A session through a port_mode same range on 127.0.0.1 to a backend on
// 127.0.0.2 holds two sockets on the range's port: nginx's accepted one
// (local 127.0.0.1:P) and the backend's (local 127.0.0.2:P). Only the
// first is the stream's: each session counts once. A wildcard stream
// counts every address of its family, not an IPv6 socket on its port.
func TestActiveCountsOnlyTheStreamsListenAddress(t *testing.T) {
	c, s := rangeCollector(t)
	s.put(c, stream.Spec{Protocol: stream.TCP, Listen: 20000, ListenEnd: 20099, Bind: "127.0.0.1", PortMode: stream.PortModeSame,
		Backends: []string{"127.0.0.2:20000"}, CreatedAt: day})
	s.put(c, stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"10.0.0.5:80"}, CreatedAt: day})
	ap := netip.MustParseAddrPort
	table := map[netip.AddrPort]int{
		ap("127.0.0.1:20000"): 1, ap("127.0.0.2:20000"): 1, // a session on port 20000: nginx's end, the backend's end
		ap("127.0.0.1:20050"): 2, ap("127.0.0.2:20050"): 2, // two on 20050
		ap("127.0.0.1:41000"): 1, ap("127.0.0.1:41001"): 1, // clients' and nginx's outgoing ends
		ap("192.0.2.7:9000"): 1, // a session on the wildcard stream
		ap("[::1]:9000"):     1, // another process's IPv6 socket: nginx listens on 0.0.0.0 only
	}
	c.active.read = func() map[netip.AddrPort]int { return table }
	rng := stream.ID{Protocol: stream.TCP, Port: 20000}
	if st := c.Get(rng); st == nil || st.Active != 3 {
		t.Errorf("the range's open sessions: %+v, want 3", st)
	}
	single := stream.ID{Protocol: stream.TCP, Port: 9000}
	if st := c.Get(single); st == nil || st.Active != 1 {
		t.Errorf("the wildcard stream's open sessions: %+v, want 1", st)
	}
	sample := c.sample()
	if got := sample[rng.String()].Active; got != 3 {
		t.Errorf("the range's open sessions in the events' sample: %d, want 3", got)
	}
	if got := sample[single.String()].Active; got != 1 {
		t.Errorf("the wildcard stream's open sessions in the events' sample: %d, want 1", got)
	}
}
