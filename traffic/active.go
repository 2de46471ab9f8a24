package traffic

import (
	"net/netip"
	"sync"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// Active counts the TCP sessions open right now on each local port, from
// the kernel's socket table (ESTABLISHED sockets whose local port is the
// stream's): nginx logs a session only when it ends. Reading the table
// costs O(sockets on the host), so counts are kept for a second.
type Active struct {
	// read returns the established sockets by local address and port
	// (nil: the host's, procfs.Host.Established).
	read func() map[netip.AddrPort]int

	mu   sync.Mutex
	at   time.Time
	open openSockets
}

// openSockets are the established TCP sockets by local port, then local
// address.
type openSockets map[int]map[netip.Addr]int

// All returns the open TCP sockets by local port and address. The map
// must not be changed.
func (a *Active) All() openSockets {
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.at) > time.Second || a.open == nil {
		read := a.read
		if read == nil {
			read = procfs.Host.Established
		}
		a.open = bySocketPort(read())
		a.at = time.Now()
	}
	return a.open
}

func bySocketPort(all map[netip.AddrPort]int) openSockets {
	o := openSockets{}
	for ap, n := range all {
		port := int(ap.Port())
		if o[port] == nil {
			o[port] = map[netip.Addr]int{}
		}
		o[port][ap.Addr()] += n
	}
	return o
}

// on returns the sessions nginx holds on port for a stream that listens
// on address listen: the sockets whose local address is one listen
// accepts on. Another local socket on the same port is not nginx's: the
// accepted end of nginx's own connection to a backend on this host that
// listens on the same port at another address (port_mode same to
// 127.0.0.2 for a range on 127.0.0.1), which would count every session
// twice.
func (o openSockets) on(port int, listen netip.Addr) int {
	n := 0
	for a, k := range o[port] {
		if accepts(listen, a) {
			n += k
		}
	}
	return n
}

// accepts reports whether a socket listening on address listen accepts
// connections to local address a: an IPv4 wildcard (0.0.0.0) every IPv4
// address of the host, an IPv6 one (::) every IPv6 address (nginx
// listens with ipv6only on), any other address only itself. An invalid
// listen is not known: every address counts.
func accepts(listen, a netip.Addr) bool {
	switch {
	case !listen.IsValid():
		return true
	case listen.IsUnspecified():
		return a.Is4() == listen.Is4()
	}
	return a == listen
}
