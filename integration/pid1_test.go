package integration

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// procs returns the host pids whose /proc/PID/stat satisfies keep.
func procs(keep func(pid, ppid int, state string, cmdline []byte) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if keep(pid, ppid, f[0], cmdline) {
			out = append(out, pid)
		}
	}
	return out
}

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

	inner := procs(func(_, ppid int, _ string, _ []byte) bool { return ppid == d.cmd.Process.Pid })
	if len(inner) != 1 {
		t.Fatalf("the daemon's pid in the namespace: %v", inner)
	}
	pid1 := inner[0]
	// unshare does not pass SIGTERM on; stop the daemon itself first.
	t.Cleanup(func() { syscall.Kill(pid1, syscall.SIGTERM) })
	// A worker just forked still carries its master's title for a moment:
	// a master is one whose parent is not itself a master of ours.
	master := func() int {
		m := procs(func(_, ppid int, state string, cmdline []byte) bool {
			return state != "Z" && bytes.HasPrefix(cmdline, []byte("nginx: master process")) && bytes.Contains(cmdline, []byte(d.dataDir))
		})
		var top []int
		for _, pid := range m {
			if len(procs(func(p, pp int, _ string, _ []byte) bool { return p == pid && slices.Contains(m, pp) })) == 0 {
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
	if ppid := procs(func(pid, ppid int, _ string, _ []byte) bool { return pid == old && ppid == pid1 }); len(ppid) != 1 {
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
		return len(procs(func(_, ppid int, state string, _ []byte) bool { return ppid == pid1 && state == "Z" })) == 0
	})
}
