package procfs

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

func TestParseStatSkipsTheCommandName(t *testing.T) {
	p, err := parseStat(42, []byte("42 (a b) c) S 7 42 42 0 -1"))
	if err != nil || p != (Proc{PID: 42, PPID: 7, State: 'S'}) {
		t.Fatalf("%+v %v", p, err)
	}
	for _, bad := range []string{"", "42 (x", "42 (x) S"} {
		if _, err := parseStat(42, []byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestParseRow(t *testing.T) {
	const row = "   1: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0"
	s, ok := parseRow(row, tcpListen)
	if !ok || s != (Socket{Port: 9000, Inode: "12345", Addr: netip.MustParseAddr("127.0.0.1")}) {
		t.Fatalf("%+v %v", s, ok)
	}
	if _, ok := parseRow(row, tcpEstablished); ok {
		t.Fatal("a LISTEN row read as established")
	}
	if s, ok := parseRow(row, anyState); !ok || s.Port != 9000 {
		t.Fatalf("any state: %+v %v", s, ok)
	}
}

func TestOwnProcess(t *testing.T) {
	p, err := Stat(os.Getpid())
	if err != nil || p.PID != os.Getpid() || p.PPID != os.Getppid() || p.Zombie() {
		t.Fatalf("%+v %v", p, err)
	}
	if len(Cmdline(os.Getpid())) == 0 {
		t.Fatal("no command line")
	}
	if uid, err := RealUID(os.Getpid()); err != nil || uid != uint32(os.Getuid()) {
		t.Fatalf("uid %d %v", uid, err)
	}
	if _, err := Stat(-1); err == nil {
		t.Fatal("stat of no process")
	}
}

func TestChildrenAndScan(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if !slices.Contains(Children(os.Getpid()), cmd.Process.Pid) {
		t.Fatalf("child %d not found", cmd.Process.Pid)
	}
	if got := Scan(func(p Proc, _ []byte) bool { return p.PID == cmd.Process.Pid }); !slices.Equal(got, []int{cmd.Process.Pid}) {
		t.Fatalf("scan: %v", got)
	}
}

func TestOpenFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	if !HoldsFile(me, path) || !HoldsInode(me, st.Ino) {
		t.Fatal("an open file is not seen")
	}
	os.Remove(path)
	if !HoldsFile(me, path) {
		t.Fatal("an open file is not seen once removed")
	}
	if HoldsFile(me, path+".other") || HoldsFile(-1, path) {
		t.Fatal("a file not open is seen")
	}
}

func TestSockets(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	var inode string
	if err := Host.Accepting(false, func(s Socket) {
		if s.Port == port {
			inode = s.Inode
		}
	}); err != nil || inode == "" {
		t.Fatalf("listener on %d not in the table (%v)", port, err)
	}
	if !HoldsSocket(os.Getpid(), map[string]bool{inode: true}) {
		t.Fatal("our listening socket is not ours")
	}
	mine := false
	Sockets(os.Getpid(), func(i string) { mine = mine || i == inode })
	if !mine {
		t.Fatal("Sockets does not list the listener")
	}
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := TablesOf(os.Getpid()).Established()[netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))]; n != 1 {
		t.Fatalf("%d established on %d, want 1", n, port)
	}
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	uport := u.LocalAddr().(*net.UDPAddr).Port
	found := false
	Host.Accepting(true, func(s Socket) { found = found || s.Port == uport })
	if !found {
		t.Fatal("bound UDP socket not in the table")
	}
	if err := Tables("/nonexistent").Each(false, func(Socket) {}); err != ErrNoTables {
		t.Fatalf("no tables: %v", err)
	}
}
