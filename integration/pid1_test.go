package integration

import (
	"bytes"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// As a container's entrypoint the daemon is PID 1: the nginx master it
// starts is its child after daemonizing, and when that master dies its
// remains must be reaped. The daemon runs here as PID 1 of a new PID
// namespace.
func TestAsPID1ReapsAndRestartsNginx(t *testing.T) {
	t.Parallel()
	requireTool(t, "unshare")
	requireRoot(t, "for a PID namespace")
	d := newDaemon(t, 1)
	d.wrap = []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"}
	d.start()
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin, "A:")

	inner := procfs.Children(d.cmd.Process.Pid)
	if len(inner) != 1 {
		t.Fatalf("the daemon's pid in the namespace: %v", inner)
	}
	pid1 := inner[0]
	// unshare does not pass SIGTERM on; stop the daemon itself first.
	t.Cleanup(func() { syscall.Kill(pid1, syscall.SIGTERM) })
	// A worker just forked still carries its master's title for a moment:
	// a master is one whose parent is not itself a master of ours.
	master := func() int {
		m := procfs.Scan(func(p procfs.Proc, cmdline []byte) bool {
			return !p.Zombie() && bytes.HasPrefix(cmdline, []byte("nginx: master process")) && bytes.Contains(cmdline, []byte(d.dataDir))
		})
		var top []int
		for _, pid := range m {
			if p, err := procfs.Stat(pid); err != nil || !slices.Contains(m, p.PPID) {
				top = append(top, pid)
			}
		}
		if len(top) != 1 {
			return 0
		}
		return top[0]
	}
	old := master()
	if old == 0 {
		t.Fatal("no nginx master")
	}
	if p, err := procfs.Stat(old); err != nil || p.PPID != pid1 {
		t.Fatal("the daemonized nginx master is not the daemon's child: nobody would reap it")
	}
	syscall.Kill(old, syscall.SIGKILL)
	eventually(t, "a new nginx master", 10*time.Second, func() bool {
		m := master()
		return m != 0 && m != old
	})
	eventually(t, "traffic through the new master", 10*time.Second, func() bool {
		got, err := echo(t, d.portMin, "pid1\n")
		return err == nil && got == "A:pid1\n"
	})
	eventually(t, "no zombie left", 10*time.Second, func() bool {
		return len(procfs.Scan(func(p procfs.Proc, _ []byte) bool { return p.PPID == pid1 && p.Zombie() })) == 0
	})
}

// With a pool of masters, as PID 1: every shard's master is the daemon's
// child, two of them die at once while writes go on, and each shard
// reaps and restarts its own without taking the exit status of a command
// another shard runs (which would fail that shard's start or reload).
func TestAsPID1WithAPoolReapsEveryShard(t *testing.T) {
	t.Parallel()
	requireTool(t, "unshare")
	requireRoot(t, "for a PID namespace")
	const streams = 8
	d := newDaemon(t, streams+2, "NGINX_SHARDS=4")
	d.wrap = []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"}
	d.start()
	be := startEcho(t, "A:")
	for i := range streams {
		d.mustPut("tcp", d.portMin+i, `{"backend":"`+be.addr()+`"}`)
	}
	inner := procfs.Children(d.cmd.Process.Pid)
	if len(inner) != 1 {
		t.Fatalf("the daemon's pid in the namespace: %v", inner)
	}
	pid1 := inner[0]
	t.Cleanup(func() { syscall.Kill(pid1, syscall.SIGTERM) })
	masters := func() []int {
		return procfs.Scan(func(p procfs.Proc, cmdline []byte) bool {
			return !p.Zombie() && p.PPID == pid1 && bytes.HasPrefix(cmdline, []byte("nginx: master process")) && bytes.Contains(cmdline, []byte(d.dataDir))
		})
	}
	before := masters()
	if len(before) < 2 {
		t.Fatalf("%d streams put one after another run on %d masters, want several", streams, len(before))
	}
	for _, pid := range before[:2] {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// Writes go on meanwhile, on every shard.
	for i := range streams {
		d.mustPut("tcp", d.portMin+i, `{"backend":"`+be.addr()+`","connect_timeout":"5s"}`)
	}
	eventually(t, "every stream forwarding through live masters", 15*time.Second, func() bool {
		for i := range streams {
			if got, err := echo(t, d.portMin+i, "pid1\n"); err != nil || got != "A:pid1\n" {
				return false
			}
		}
		return true
	})
	for _, pid := range before[:2] {
		if slices.Contains(masters(), pid) {
			t.Fatalf("killed master %d still listed", pid)
		}
	}
	eventually(t, "no zombie left", 10*time.Second, func() bool {
		return len(procfs.Scan(func(p procfs.Proc, _ []byte) bool { return p.PPID == pid1 && p.Zombie() })) == 0
	})
}
