package traffic

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// listen opens a Collector in a temporary directory that knows the streams
// ids, and a connection to it.
func listen(t *testing.T, ids ...string) (*Collector, net.Conn) {
	t.Helper()
	known := map[string]bool{}
	for _, id := range ids {
		known[id] = true
	}
	c, err := Listen(filepath.Join(t.TempDir(), "traffic.sock"), -1, func(id stream.ID) (Stream, bool) { return Stream{Last: id.Port}, known[id.String()] })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go c.Run()
	conn, err := net.Dial("unixgram", strings.TrimPrefix(c.Addr(), "unix:"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return c, conn
}

// waitFor polls until stream id has stats.
func waitFor(t *testing.T, c *Collector, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.Get(stream.MustParseID(id)) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no stats for %s within 5s", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRecordsNginxSessionLines(t *testing.T) {
	c, conn := listen(t, "tcp/9000", "udp/53", "tcp/1")
	for _, line := range []string{
		"<190>Nov 24 20:48:00 stream_conductor: 9000 TCP 127.0.0.1 10.0.0.1:2000 120 80 0.010 200",
		"<190>Nov 24 20:48:01 stream_conductor: 9000 TCP 127.0.0.1 10.0.0.2:2000 30 20 0.002 200",
		"<190>Nov 24 20:48:02 stream_conductor: 9000 TCP 127.0.0.1 10.0.0.1:2000, 10.0.0.2:2000 0 0 0.001 502",
		"<190>Nov 24 20:48:03 stream_conductor: 53 UDP 127.0.0.1 10.0.0.53:53 64 32 0.000 200",
		"<190>Nov 24 20:48:03 stream_conductor: garbage",
	} {
		conn.Write([]byte(line))
	}
	waitFor(t, c, "udp/53")
	tcp := c.Get(stream.MustParseID("tcp/9000"))
	if tcp == nil || tcp.Sessions != 3 || tcp.BytesOut != 150 || tcp.BytesIn != 100 || tcp.ConnectFailures != 1 {
		t.Fatalf("tcp/9000: %+v", tcp)
	}
	if tcp.Backends["10.0.0.1:2000"] != 1 || tcp.Backends["10.0.0.2:2000"] != 2 {
		t.Fatalf("per backend: %v", tcp.Backends)
	}
	if udp := c.Get(stream.MustParseID("udp/53")); udp == nil || udp.Sessions != 1 || udp.BytesIn != 32 {
		t.Fatalf("udp/53: %+v", udp)
	}
	if c.Get(stream.MustParseID("tcp/1")) != nil {
		t.Fatal("stats for a stream that carried nothing")
	}
}

// Lines naming streams that do not exist are dropped: they create no
// stats, however many there are.
func TestLinesForUnknownStreamsAreDropped(t *testing.T) {
	c, conn := listen(t, "tcp/9000")
	for port := range 2000 {
		fmt.Fprintf(conn, "<190>Nov 24 20:48:00 stream_conductor: %d TCP 127.0.0.1 10.0.0.1:2000 1 1 0.001 200", 10000+port)
	}
	conn.Write([]byte("<190>Nov 24 20:48:00 stream_conductor: 9000 TCP 127.0.0.1 10.0.0.1:2000 7 5 0.001 200"))
	waitFor(t, c, "tcp/9000") // after every line before it
	if all := c.All(); len(all) != 1 || all[stream.MustParseID("tcp/9000")].BytesOut != 7 {
		t.Fatalf("stats: %v", all)
	}
}

// Sessions to more upstream addresses than MaxBackendAddrs are counted
// under OtherBackends.
func TestBackendAddressesAreBounded(t *testing.T) {
	c, err := Listen(filepath.Join(t.TempDir(), "traffic.sock"), -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range MaxBackendAddrs + 100 {
		c.record([]byte(fmt.Sprintf("x: 9000 TCP 127.0.0.1 10.0.%d.%d:2000 7 5 0.001 200", i/250, i%250)), time.Now())
	}
	s := c.Get(stream.MustParseID("tcp/9000"))
	if s.Sessions != MaxBackendAddrs+100 || len(s.Backends) != MaxBackendAddrs+1 || s.Backends[OtherBackends] != 100 {
		t.Fatalf("%d sessions, %d addresses, %d other", s.Sessions, len(s.Backends), s.Backends[OtherBackends])
	}
}

// Stats of a stream deleted since are forgotten by All.
func TestAllForgetsDeletedStreams(t *testing.T) {
	exists := true
	c, err := Listen(filepath.Join(t.TempDir(), "traffic.sock"), -1, func(id stream.ID) (Stream, bool) { return Stream{Last: id.Port}, exists })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.record([]byte("x: 9000 TCP 127.0.0.1 10.0.0.1:2000 7 5 0.001 200"), time.Now())
	if len(c.All()) != 1 {
		t.Fatal("no stats")
	}
	exists = false
	if all := c.All(); len(all) != 0 || len(c.stats) != 0 {
		t.Fatalf("stats of a deleted stream: %v", all)
	}
}

// A stream deleted and created again on the same port is another stream:
// it shows no traffic until it carries some, and then only its own.
func TestRecreatedStreamStartsFromZero(t *testing.T) {
	var mu sync.Mutex
	created := map[string]time.Time{"tcp/9000": time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), "tcp/9001": time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)}
	c, err := Listen(filepath.Join(t.TempDir(), "traffic.sock"), -1, func(id stream.ID) (Stream, bool) {
		mu.Lock()
		defer mu.Unlock()
		at, ok := created[id.String()]
		return Stream{Created: at, Last: id.Port}, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line := func(port int) []byte {
		return []byte(fmt.Sprintf("x: %d TCP 127.0.0.1 10.0.0.1:2000 700 500 0.001 200", port))
	}
	now := time.Now()
	c.record(line(9000), now)
	c.record(line(9000), now)
	c.record(line(9001), now)
	if s := c.Get(stream.MustParseID("tcp/9000")); s == nil || s.Sessions != 2 || s.BytesOut != 1400 {
		t.Fatalf("before: %+v", s)
	}
	mu.Lock()
	created["tcp/9000"] = created["tcp/9000"].Add(time.Minute) // deleted, created again
	mu.Unlock()
	if s := c.Get(stream.MustParseID("tcp/9000")); s != nil && (s.Sessions != 0 || s.BytesOut != 0 || s.BytesIn != 0 || len(s.Backends) != 0) {
		t.Fatalf("the new tcp/9000 shows the old one's traffic: %+v", s)
	}
	if _, ok := c.All()[stream.MustParseID("tcp/9000")]; ok {
		t.Fatal("All lists the old tcp/9000's traffic for the new one")
	}
	c.record(line(9000), now)
	if s := c.Get(stream.MustParseID("tcp/9000")); s == nil || s.Sessions != 1 || s.BytesOut != 700 || s.BytesIn != 500 || s.Backends["10.0.0.1:2000"] != 1 {
		t.Fatalf("after its first session, the new tcp/9000 has %+v; want 1 session, 700 bytes out", s)
	}
	if s := c.All()[stream.MustParseID("tcp/9001")]; s.Sessions != 1 {
		t.Fatalf("another stream lost its counts: %+v", s)
	}
}

// The socket is replaced at start and only its owner may write to it.
func TestSocketIsPrivateAndReplacedAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "traffic.sock")
	if err := os.WriteFile(path, []byte("stale"), 0o666); err != nil {
		t.Fatal(err)
	}
	c, err := Listen(path, -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v, %v", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
	if _, err := Listen(filepath.Join(t.TempDir(), strings.Repeat("x", 120)), -1, nil); err == nil || !strings.Contains(err.Error(), "shorter DATA_DIR") {
		t.Fatalf("too long a path: %v", err)
	}
}

// Sessions nginx refused are counted by cause from their status: 503 by
// a connection limit, 403 by the access rules; they are sessions too, and
// neither is a connect failure.
func TestLimits16RefusedByStatus(t *testing.T) {
	c, conn := listen(t, "tcp/9000", "udp/53")
	for _, line := range []string{
		"<190>Nov 24 20:48:00 stream_conductor: 9000 TCP 127.0.0.1 - 0 0 0.000 503",
		"<190>Nov 24 20:48:00 stream_conductor: 9000 TCP 127.0.0.1 - 0 0 0.000 503",
		"<190>Nov 24 20:48:01 stream_conductor: 9000 TCP 127.0.0.2 - 0 0 0.000 403",
		"<190>Nov 24 20:48:02 stream_conductor: 9000 TCP 127.0.0.1 10.0.0.1:2000 10 10 0.010 200",
		"<190>Nov 24 20:48:03 stream_conductor: 53 UDP 127.0.0.1 - 0 0 0.000 503",
	} {
		conn.Write([]byte(line))
	}
	waitFor(t, c, "udp/53")
	tcp := c.Get(stream.MustParseID("tcp/9000"))
	if tcp == nil || tcp.Refused != (Refused{Limit: 2, Deny: 1}) || tcp.Sessions != 4 || tcp.ConnectFailures != 0 {
		t.Fatalf("tcp/9000: %+v", tcp)
	}
	if udp := c.All()[stream.MustParseID("udp/53")]; udp.Refused != (Refused{Limit: 1}) {
		t.Fatalf("udp/53: %+v", udp)
	}
}
