package nginx

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// A start that finds its ports held by the workers of our own master
// that died (kill -9) after Recover looked is not the streams' fault:
// Start retires those orphans and starts, rather than failing with
// bind()'s "Address already in use". A session open through an orphan
// keeps flowing meanwhile.
func TestStartRetiresOrphansThatHoldItsPorts(t *testing.T) {
	const listenAddr = "127.81.47.10"
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nginx is not installed:", err)
		}
		t.Skip("nginx is not installed")
	}
	dir := t.TempDir()
	include := filepath.Join(dir, "streams")
	if err := os.Mkdir(include, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := NewManaged(ManagedConfig{Bin: bin, Dir: filepath.Join(dir, "nginx"), IncludeDir: include,
		Workers: 2, ApplyTimeout: 10 * time.Second, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := m.Prepare(ctx, 1); err != nil {
		t.Fatal(err)
	}
	backend, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); buf := make([]byte, 64); n, _ := c.Read(buf); c.Write(buf[:n]) }()
		}
	}()
	// The stream's port is on a loopback address of this test's own: a
	// port of 127.0.0.1 found free could be given meanwhile to an outgoing
	// connection of a test running beside it.
	probe, err := net.Listen("tcp4", listenAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	conf := fmt.Sprintf("server {\n    listen %s:%d;\n    proxy_pass %s;\n}\n", listenAddr, port, backend.Addr())
	if err := os.WriteFile(filepath.Join(include, fmt.Sprintf("stream-tcp-%d.conf", port)), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first := m.PID()
	workers := procfs.Children(first)
	t.Cleanup(func() {
		m.Quit(context.Background())
		for _, pid := range workers {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	open, err := net.Dial("tcp4", net.JoinHostPort(listenAddr, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	syscall.Kill(first, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for m.Running() {
		if time.Now().After(deadline) {
			t.Fatal("the killed master still runs")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatalf("start with our orphans holding the port: %v", err)
	}
	if pid := m.PID(); pid == 0 || pid == first || slices.Contains(workers, pid) {
		t.Fatalf("no new master: %d (killed %d)", pid, first)
	}
	// The new master serves the port, and the session opened through an
	// orphan still flows.
	for _, c := range []net.Conn{mustDial(t, listenAddr, port), open} {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := c.Read(buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q %v", buf, err)
		}
	}
}

func mustDial(t *testing.T, addr string, port int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
