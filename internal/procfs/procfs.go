// Package procfs reads what Linux's /proc says about sockets and
// processes: the kernel's socket tables, process scans and the descriptors
// a process holds. It is the one place that parses /proc; the nginx driver,
// the traffic counters and the tests use it.
package procfs

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Proc is what Scan and Stat read of /proc/PID/stat.
type Proc struct {
	PID, PPID int
	State     byte // 'R', 'S', 'Z' (zombie), ...
}

// Zombie reports whether the process exited and waits to be reaped.
func (p Proc) Zombie() bool { return p.State == 'Z' }

// Stat reads /proc/PID/stat; it fails when the process is gone.
func Stat(pid int) (Proc, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Proc{}, err
	}
	return parseStat(pid, b)
}

// parseStat reads the fields that follow the parenthesised command name
// (which may itself hold spaces and parentheses): state, ppid, ...
func parseStat(pid int, b []byte) (Proc, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Proc{}, syscall.EINVAL
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return Proc{}, syscall.EINVAL
	}
	p := Proc{PID: pid, State: f[0][0]}
	p.PPID, _ = strconv.Atoi(f[1])
	return p, nil
}

// Cmdline returns /proc/PID/cmdline (NUL-separated arguments, or the
// title a process gave itself, such as "nginx: master process ..."); nil
// when the process is gone.
func Cmdline(pid int) []byte {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return b
}

// Scan returns the pids of the processes for which keep is true, given
// their stat and command line.
func Scan(keep func(p Proc, cmdline []byte) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := Stat(pid)
		if err != nil {
			continue
		}
		if keep(p, Cmdline(pid)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Children returns the pids whose parent is pid. It reads the kernel's
// lists of pid's children (/proc/PID/task/TID/children, one per thread:
// an nginx master has one), where a scan of /proc reads two files per
// process; it scans /proc where the kernel keeps no such list.
func Children(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil // no such process: no children
	}
	var kids []int
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/" + task.Name() + "/children")
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir + "/" + task.Name()); serr == nil {
				return Scan(func(p Proc, _ []byte) bool { return p.PPID == pid }) // no children lists here
			}
			continue // the thread exited
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// RealUID returns the real user id process pid runs as (the first of the
// Uid: line of /proc/PID/status).
func RealUID(pid int) (uint32, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, err := strconv.ParseUint(f[1], 10, 32)
			return uint32(uid), err
		}
	}
	return 0, syscall.EINVAL
}
