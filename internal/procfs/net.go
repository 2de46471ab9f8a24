package procfs

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"
)

// Socket states as the kernel's tables spell them.
const (
	tcpEstablished = "01"
	tcpListen      = "0A"
	udpUnconnected = "07" // TCP_CLOSE: a bound, unconnected UDP socket
)

// ErrNoTables means no socket table could be read: not Linux, or /proc is
// not mounted.
var ErrNoTables = errors.New("read /proc/net: not available")

// Socket is one row of a socket table: its local port and its inode, by
// which the process holding it is found (Sockets, HoldsSocket).
type Socket struct {
	Port  int
	Inode string
}

// Accepting calls fn with every TCP socket in LISTEN (udp false) or every
// bound, unconnected UDP socket (udp true), IPv4 and IPv6: the sockets
// that take new connections or datagrams. It fails only when no table
// could be read.
func Accepting(udp bool, fn func(Socket)) error {
	if udp {
		return scan(udpUnconnected, fn, "/proc/net/udp", "/proc/net/udp6")
	}
	return scan(tcpListen, fn, "/proc/net/tcp", "/proc/net/tcp6")
}

// Established counts the established TCP connections by local port.
func Established() map[int]int {
	counts := map[int]int{}
	scan(tcpEstablished, func(s Socket) { counts[s.Port]++ }, "/proc/net/tcp", "/proc/net/tcp6")
	return counts
}

// scan calls fn with every socket in state found in tables.
func scan(state string, fn func(Socket), tables ...string) error {
	found := false
	for _, name := range tables {
		f, err := os.Open(name)
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
// state is state.
func parseRow(line, state string) (Socket, bool) {
	fields := strings.Fields(line)
	if len(fields) < 10 || fields[3] != state {
		return Socket{}, false
	}
	_, hexPort, ok := strings.Cut(fields[1], ":")
	if !ok {
		return Socket{}, false
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return Socket{}, false
	}
	return Socket{Port: int(port), Inode: fields[9]}, true
}
