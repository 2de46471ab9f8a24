// Package traffic counts what nginx carried, per stream, from nginx's own
// session log: the managed configuration sends one syslog line per session
// (log_format LogFormat) to a Collector's Unix datagram socket, which only
// nginx's workers may write to.
package traffic

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// Listen creates the Unix datagram socket nginx logs to at path (a stale
// socket or file there is replaced), writable only by the user uid (nginx's
// worker user; -1: the daemon's own) and by root: other local users cannot
// forge sessions. The socket is bound in a private directory and renamed
// into place with its final owner and mode, so it is never open to others,
// not even for a moment. Lines are counted only for streams that known
// says exist (nil: every stream), so made-up ids cost nothing.
func Listen(path string, uid int, known func(id string) bool) (*Collector, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("traffic log socket %s: longer than the %d bytes a Unix socket path may have; use a shorter DATA_DIR", path, maxSocketPath)
	}
	if strings.ContainsAny(path, ",\n") {
		return nil, fmt.Errorf("traffic log socket %q: nginx cannot name a path with a comma or a newline; use another DATA_DIR", path)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".t")
	if err != nil {
		return nil, fmt.Errorf("traffic log socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: bound, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("traffic log socket: %w", err)
	}
	if err := placeSocket(bound, path, uid); err != nil {
		conn.Close()
		return nil, fmt.Errorf("traffic log socket %s: %w", path, err)
	}
	if known == nil {
		known = func(string) bool { return true }
	}
	return &Collector{conn: conn, path: path, known: known, stats: map[string]*Stats{}}, nil
}

// Reachable reports whether the user uid (with primary group gid) may
// reach the socket at path: a sender needs to search every directory
// above it. A DATA_DIR under a private directory (mode 0700) shuts out
// nginx's workers when they run as another user than the daemon.
func Reachable(path string, uid, gid int) error {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !searchable(fi, uid, gid) {
			return fmt.Errorf("directory %s (mode %v) cannot be searched by uid %d", dir, fi.Mode().Perm(), uid)
		}
		if parent := filepath.Dir(dir); parent == dir {
			return nil
		}
	}
}

func searchable(fi os.FileInfo, uid, gid int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	perm := fi.Mode().Perm()
	switch {
	case uid == 0 || !ok:
		return true
	case int(st.Uid) == uid:
		return perm&0o100 != 0
	case int(st.Gid) == gid:
		return perm&0o010 != 0
	}
	return perm&0o001 != 0
}

// maxSocketPath is the longest path a Unix socket address holds (sun_path
// is 108 bytes with its NUL).
const maxSocketPath = 107

// placeSocket gives the socket at bound its owner and mode and moves it to
// path.
func placeSocket(bound, path string, uid int) error {
	if err := os.Chmod(bound, 0o600); err != nil {
		return err
	}
	if uid >= 0 && uid != os.Geteuid() {
		if err := os.Chown(bound, uid, -1); err != nil {
			return err
		}
	}
	return os.Rename(bound, path)
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
