package procfs

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Socket states as the kernel's tables spell them.
const (
	tcpEstablished = "01"
	tcpListen      = "0A"
	udpUnconnected = "07" // TCP_CLOSE: a bound, unconnected UDP socket
	anyState       = ""
)

// ErrNoTables means no socket table could be read: not Linux, /proc is
// not mounted, or the process is gone.
var ErrNoTables = errors.New("read /proc/net: not available")

// Socket is one row of a socket table: its local port and its inode, by
// which the process holding it is found (Sockets, HoldsSocket), and its
// local address (IPv4-mapped IPv6 addresses unmapped).
type Socket struct {
	Port  int
	Inode string
	Addr  netip.Addr
}

// Tables are the socket tables of one network namespace.
type Tables string

// Host are the socket tables of our own network namespace.
const Host Tables = "/proc/net"

// TablesOf returns the socket tables of the network namespace that
// process pid is in.
func TablesOf(pid int) Tables { return Tables("/proc/" + strconv.Itoa(pid) + "/net") }

// Accepting calls fn with every TCP socket in LISTEN (udp false) or every
// bound, unconnected UDP socket (udp true), IPv4 and IPv6: the sockets
// that take new connections or datagrams. It fails only when no table
// could be read. The host's are asked of the kernel (sock_diag, diag.go)
// when it answers.
func (t Tables) Accepting(udp bool, fn func(Socket)) error {
	if t == Host {
		if all, err := diagAccepting(udp); err == nil {
			for _, s := range all {
				fn(s)
			}
			return nil
		}
	}
	if udp {
		return t.scan(udpUnconnected, fn, "udp", "udp6")
	}
	return t.scan(tcpListen, fn, "tcp", "tcp6")
}

// Each calls fn with every TCP (udp false) or UDP socket, in any state.
func (t Tables) Each(udp bool, fn func(Socket)) error {
	if udp {
		return t.scan(anyState, fn, "udp", "udp6")
	}
	return t.scan(anyState, fn, "tcp", "tcp6")
}

// Established counts the established TCP connections by local address
// and port: a connection between two local sockets is two of them, one
// on each end's address. The host's are asked of the kernel (sock_diag)
// when it answers.
func (t Tables) Established() map[netip.AddrPort]int {
	counts := map[netip.AddrPort]int{}
	add := func(s Socket) { counts[netip.AddrPortFrom(s.Addr, uint16(s.Port))]++ }
	if t == Host {
		if all, err := diagStates(syscall.IPPROTO_TCP, 1<<stateEstablished); err == nil {
			for _, s := range all {
				add(s)
			}
			return counts
		}
	}
	t.scan(tcpEstablished, add, "tcp", "tcp6")
	return counts
}

// scan calls fn with every socket in state found in the tables named.
func (t Tables) scan(state string, fn func(Socket), tables ...string) error {
	found := false
	for _, name := range tables {
		f, err := os.Open(string(t) + "/" + name)
		if err != nil {
			continue // no IPv6 on this host
		}
		found = true
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			if s, ok := parseRow(sc.Text(), state); ok {
				fn(s)
			}
		}
		f.Close()
	}
	if !found {
		return ErrNoTables
	}
	return nil
}

// parseRow reads "sl local_address rem_address st ... inode" when its
// state is state (or state is anyState).
func parseRow(line, state string) (Socket, bool) {
	fields := strings.Fields(line)
	if len(fields) < 10 || (state != anyState && fields[3] != state) {
		return Socket{}, false
	}
	hexAddr, hexPort, ok := strings.Cut(fields[1], ":")
	if !ok {
		return Socket{}, false
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return Socket{}, false
	}
	return Socket{Port: int(port), Inode: fields[9], Addr: parseHexAddr(hexAddr)}, true
}

// parseHexAddr reads an address as the tables print it: 8 or 32 hex
// digits, each 32-bit word in the host's byte order ("0100007F" is
// 127.0.0.1 on a little-endian host); invalid if it is neither.
func parseHexAddr(h string) netip.Addr {
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 4 && len(b) != 16 {
		return netip.Addr{}
	}
	for i := 0; i < len(b); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(b[i:]))
	}
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap()
}
