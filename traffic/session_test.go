package traffic

import (
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

type seen struct {
	id     stream.ID
	addr   netip.Addr
	status int
}

// OnSession is told of each session of a known stream, with its source
// address (an IPv4-mapped one unmapped) and nginx's status; lines of
// unknown streams and lines it cannot read are not passed on.
func TestOnSessionSeesEverySessionOfKnownStreams(t *testing.T) {
	c, err := Listen(filepath.Join(t.TempDir(), "traffic.sock"), -1, func(id stream.ID) (Stream, bool) {
		return Stream{Last: id.Port}, id.Port == 9000 || id.Port == 53
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	var got []seen
	c.OnSession = func(id stream.ID, addr netip.Addr, status int, _ time.Time) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, seen{id, addr, status})
	}
	now := time.Now()
	for _, line := range []string{
		"<190>Nov 24 20:48:00 stream_conductor: 9000 TCP 127.0.0.3 10.0.0.1:2000 0 0 0.001 502",
		"<190>Nov 24 20:48:00 stream_conductor: 9000 TCP ::ffff:127.0.0.4 - 0 0 0.000 403",
		"<190>Nov 24 20:48:00 stream_conductor: 53 UDP 2001:db8::1 10.0.0.1:53 1 1 0.000 200",
		"<190>Nov 24 20:48:00 stream_conductor: 9001 TCP 127.0.0.5 - 0 0 0.000 502",   // unknown stream
		"<190>Nov 24 20:48:00 stream_conductor: 9000 TCP not-an-ip - 0 0 0.000 502",   // unreadable address
		"<190>Nov 24 20:48:00 stream_conductor: 9000 TCP 127.0.0.6 - 0 0 0.000 fifty", // unreadable status
	} {
		c.record([]byte(line), now)
	}
	want := []seen{
		{stream.MustParseID("tcp/9000"), netip.MustParseAddr("127.0.0.3"), 502},
		{stream.MustParseID("tcp/9000"), netip.MustParseAddr("127.0.0.4"), 403},
		{stream.MustParseID("udp/53"), netip.MustParseAddr("2001:db8::1"), 200},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("session %d: got %v, want %v", i, got[i], want[i])
		}
	}
}
