package procfs

import (
	"net"
	"net/netip"
	"slices"
	"testing"
)

// sockets returns what fn reports, sorted by inode.
func sockets(t testing.TB, fn func(func(Socket)) error) []Socket {
	t.Helper()
	var all []Socket
	if err := fn(func(s Socket) { all = append(all, s) }); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(all, func(a, b Socket) int {
		if a.Inode < b.Inode {
			return -1
		}
		if a.Inode > b.Inode {
			return 1
		}
		return 0
	})
	return all
}

// The kernel's sock_diag answer names the same sockets, addresses, ports
// and inodes as its /proc tables, for listening TCP (v4 and v6) and bound UDP.
func TestDiagAgreesWithTheProcTables(t *testing.T) {
	ln4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln4.Close()
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6:", err)
	}
	defer ln6.Close()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, udp := range []bool{false, true} {
		fromDiag := sockets(t, func(fn func(Socket)) error {
			all, err := diagAccepting(udp)
			for _, s := range all {
				fn(s)
			}
			return err
		})
		fromProc := sockets(t, func(fn func(Socket)) error {
			if udp {
				return Host.scan(udpUnconnected, fn, "udp", "udp6")
			}
			return Host.scan(tcpListen, fn, "tcp", "tcp6")
		})
		// Other tests' sockets come and go between the two reads: compare
		// ours, and that neither invents any.
		mine := []int{ln4.Addr().(*net.TCPAddr).Port, ln6.Addr().(*net.TCPAddr).Port}
		if udp {
			mine = []int{pc.LocalAddr().(*net.UDPAddr).Port}
		}
		for _, port := range mine {
			d := slices.IndexFunc(fromDiag, func(s Socket) bool { return s.Port == port })
			p := slices.IndexFunc(fromProc, func(s Socket) bool { return s.Port == port })
			if d < 0 || p < 0 || fromDiag[d] != fromProc[p] {
				t.Fatalf("udp=%v port %d: sock_diag %v, /proc %v", udp, port, fromDiag, fromProc)
			}
		}
	}
}

// Established from sock_diag counts a connection on its local port, as
// the /proc tables do.
func TestDiagEstablished(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	all, err := diagStates(6, 1<<stateEstablished)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, x := range all {
		if x.Port == port {
			n++
		}
	}
	proc := map[int]int{}
	Host.scan(tcpEstablished, func(x Socket) { proc[x.Port]++ }, "tcp", "tcp6")
	local := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	if n != 1 || proc[port] != 1 || Host.Established()[local] != 1 {
		t.Fatalf("established on %d: sock_diag %d, /proc %d", port, n, proc[port])
	}
}

// BenchmarkAccepting1000 lists 1,000 listening sockets beside the host's
// own, through sock_diag and through /proc/net/tcp.
func BenchmarkAccepting1000(b *testing.B) {
	for range 1000 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
	}
	b.Run("sock_diag", func(b *testing.B) {
		for b.Loop() {
			if _, err := diagAccepting(false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proc", func(b *testing.B) {
		for b.Loop() {
			Host.scan(tcpListen, func(Socket) {}, "tcp", "tcp6")
		}
	})
}
