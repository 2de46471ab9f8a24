// Package traffic counts what nginx carried, per stream, from nginx's own
// session log: the managed configuration sends one syslog line per session
// (log_format LogFormat) to a Collector's Unix datagram socket, which only
// nginx's workers may write to.
package traffic

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// LogFormat is the nginx stream log_format the Collector parses: one line
// per session, written when it ends.
const LogFormat = "$server_port $protocol $remote_addr $upstream_addr $bytes_sent $bytes_received $session_time $status"

// A stream's sessions are counted by upstream address for at most
// MaxBackendAddrs addresses (a stream has at most 64 backends, each name
// may resolve to several); sessions to further ones are counted under
// OtherBackends, so that no sender can grow the map without bound.
const (
	MaxBackendAddrs = 256
	OtherBackends   = "other"
)

// Stats is one stream's traffic since the daemon started.
type Stats struct {
	Sessions uint64 `json:"sessions"`
	// Active is the TCP sessions open now (from the socket table; UDP: 0).
	Active int `json:"active"`
	// BytesIn came from clients, BytesOut went to them.
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
	// ConnectFailures are sessions nginx could not connect upstream
	// (status 502).
	ConnectFailures uint64            `json:"connect_failures"`
	LastSession     time.Time         `json:"last_session"`
	Backends        map[string]uint64 `json:"backends"` // sessions by upstream address
}

// Collector receives nginx's session log and keeps per-stream Stats.
type Collector struct {
	active Active
	conn   *net.UnixConn
	path   string
	known  func(id string) bool
	mu     sync.Mutex
	stats  map[string]*Stats
	lines  uint64
}

// Addr is where nginx must send its log: the syslog server
// "unix:/path/to/socket".
func (c *Collector) Addr() string { return "unix:" + c.path }

// Close stops receiving.
func (c *Collector) Close() error { return c.conn.Close() }

// Run receives until Close.
func (c *Collector) Run() {
	buf := make([]byte, 64<<10)
	for {
		n, _, err := c.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		c.record(buf[:n], time.Now().UTC())
	}
}

// record parses one syslog message: "<PRI>TIMESTAMP TAG: FIELDS".
func (c *Collector) record(msg []byte, now time.Time) {
	if i := bytes.Index(msg, []byte(": ")); i >= 0 {
		msg = msg[i+2:]
	}
	f := strings.Fields(string(msg))
	if len(f) < 8 {
		return
	}
	// $upstream_addr may list several addresses ("a, b"): it is whatever
	// lies between the first three fields and the last four.
	f = append(append(f[:3:3], strings.Join(f[3:len(f)-4], " ")), f[len(f)-4:]...)
	port, err := strconv.Atoi(f[0])
	if err != nil {
		return
	}
	id := stream.MakeID(stream.Protocol(strings.ToLower(f[1])), port)
	if !c.known(id) {
		return // no such stream: a stale line, or a forged one
	}
	sent, _ := strconv.ParseUint(f[4], 10, 64)
	received, _ := strconv.ParseUint(f[5], 10, 64)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines++
	s := c.stats[id]
	if s == nil {
		s = &Stats{Backends: map[string]uint64{}}
		c.stats[id] = s
	}
	s.Sessions++
	s.BytesOut += sent
	s.BytesIn += received
	if f[7] == "502" {
		s.ConnectFailures++
	}
	s.LastSession = now
	// $upstream_addr lists every address tried, the last one served.
	if up := f[3]; up != "-" {
		tried := strings.Split(up, ", ")
		addr := tried[len(tried)-1]
		if _, ok := s.Backends[addr]; !ok && len(s.Backends) >= MaxBackendAddrs {
			addr = OtherBackends
		}
		s.Backends[addr]++
	}
}

// Get returns a copy of the stats of stream id, or nil if it carried
// nothing since the daemon started.
func (c *Collector) Get(id string) *Stats {
	active := 0
	if p, port, err := stream.ParseID(id); err == nil && p == stream.TCP {
		active = c.active.Count(port) // outside c.mu: it may read the socket table
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats[id]
	if s == nil {
		if active == 0 {
			return nil
		}
		return &Stats{Active: active, Backends: map[string]uint64{}}
	}
	cp := *s
	cp.Active = active
	cp.Backends = make(map[string]uint64, len(s.Backends))
	for k, v := range s.Backends {
		cp.Backends[k] = v
	}
	return &cp
}

// All returns a copy of the stats of every stream that exists, and
// forgets those of streams deleted since.
func (c *Collector) All() map[string]Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Stats, len(c.stats))
	for id, s := range c.stats {
		if !c.known(id) {
			delete(c.stats, id)
			continue
		}
		out[id] = *s
	}
	return out
}
