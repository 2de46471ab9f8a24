// Package traffic counts what nginx carried, per stream, from nginx's own
// session log: the managed configuration sends one syslog line per session
// (log_format LogFormat) to a Collector's Unix datagram socket, which only
// nginx's workers may write to.
package traffic

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// Stats is one stream's traffic since the daemon started or the stream
// was created, whichever came later.
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
	// Ports is a range stream's traffic by port, for the ports that
	// carried a session (at most the range's, stream.MaxRangePorts); nil
	// for a single port, whose traffic is the stream's.
	Ports map[int]PortStats `json:"ports,omitempty"`
	// Refused are the sessions nginx refused before proxying (among
	// Sessions), by its own status: see Refused.
	Refused Refused `json:"refused"`
}

// Lookup says whether stream id exists, when it was created and its last
// port. A stream deleted and created again under the same id is another
// stream: its counts start from zero.
type Lookup func(id stream.ID) (s Stream, ok bool)

// Collector receives nginx's session log and keeps per-stream Stats.
type Collector struct {
	active Active
	conn   *net.UnixConn
	path   string
	lookup Lookup
	ranges atomic.Pointer[rangeIndex]
	mu     sync.Mutex
	stats  map[stream.ID]*counts
	lines  uint64
	// OnSession, when set (before Run), is told of every session of a
	// stream that exists, as it ends: who it came from and nginx's
	// status (package bans). It is called on Run's goroutine, outside
	// the Collector's lock, and must not block.
	OnSession func(id stream.ID, remote netip.Addr, status int, now time.Time)
}

// counts are the Stats of the stream created at created.
type counts struct {
	created time.Time
	Stats
}

// current returns the counts of stream id, created at created, and
// forgets those of an earlier stream of the same id; c.mu is held.
func (c *Collector) current(id stream.ID, created time.Time) *counts {
	s := c.stats[id]
	if s == nil || !s.created.Equal(created) {
		s = &counts{created: created, Stats: Stats{Backends: map[string]uint64{}}}
		c.stats[id] = s
	}
	return s
}

// forgetStale drops the counts of id unless they are of the stream that
// has it now (ok: it exists, created at created); c.mu is held.
func (c *Collector) forgetStale(id stream.ID, created time.Time, ok bool) {
	if s := c.stats[id]; s != nil && (!ok || !s.created.Equal(created)) {
		delete(c.stats, id)
	}
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
	id, st, ok := c.resolve(stream.Protocol(strings.ToLower(f[1])), port)
	if !ok {
		return // no such stream: a stale line, or a forged one
	}
	c.session(id, f[2], f[7], now)
	sent, _ := strconv.ParseUint(f[4], 10, 64)
	received, _ := strconv.ParseUint(f[5], 10, 64)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines++
	s := c.current(id, st.Created)
	s.Sessions++
	s.BytesOut += sent
	s.BytesIn += received
	if st.Last > id.Port { // a range: ports of it only, so at most MaxRangePorts
		if s.Ports == nil {
			s.Ports = map[int]PortStats{}
		}
		ps := s.Ports[port]
		ps.Sessions++
		ps.BytesOut += sent
		ps.BytesIn += received
		s.Ports[port] = ps
	}
	switch f[7] {
	case "502":
		s.ConnectFailures++
	case StatusLimit:
		s.Refused.Limit++
	case StatusDenied:
		s.Refused.Deny++
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

// session tells OnSession, if set, of a session of stream id from the
// address remote that ended with status.
func (c *Collector) session(id stream.ID, remote, status string, now time.Time) {
	if c.OnSession == nil {
		return
	}
	addr, err := netip.ParseAddr(remote)
	code, cerr := strconv.Atoi(status)
	if err != nil || cerr != nil {
		return
	}
	c.OnSession(id, addr.Unmap(), code, now)
}

// Get returns a copy of the stats of stream id, or nil if it carried
// nothing since the daemon started or it was created. The open sessions
// of a range are those of all its ports.
func (c *Collector) Get(id stream.ID) *Stats {
	st, ok := c.lookup(id)
	active := 0
	if id.Protocol == stream.TCP {
		active = activeOn(c.active.All(), id.Port, max(st.Last, id.Port), st.Listen) // outside c.mu: it may read the socket table
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetStale(id, st.Created, ok)
	s := c.stats[id]
	if s == nil {
		if active == 0 {
			return nil
		}
		return &Stats{Active: active, Backends: map[string]uint64{}}
	}
	cp := s.Stats
	cp.Active = active
	cp.Backends = make(map[string]uint64, len(s.Backends))
	for k, v := range s.Backends {
		cp.Backends[k] = v
	}
	if s.Ports != nil {
		cp.Ports = make(map[int]PortStats, len(s.Ports))
		for k, v := range s.Ports {
			cp.Ports[k] = v
		}
	}
	return &cp
}

// All returns a copy of the stats of every stream that exists, without
// Active and Ports, and forgets those of streams deleted (or deleted and
// created again) since.
func (c *Collector) All() map[stream.ID]Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[stream.ID]Stats, len(c.stats))
	for id := range c.stats {
		st, ok := c.lookup(id)
		c.forgetStale(id, st.Created, ok)
		if s := c.stats[id]; s != nil {
			cp := s.Stats
			cp.Ports = nil
			out[id] = cp
		}
	}
	return out
}
