package nginx

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/streamconductor/stream-conductor/stream"
)

// The open-file limit of a managed nginx. Its master binds every stream's
// listening socket under the soft RLIMIT_NOFILE it inherits from us
// (worker_rlimit_nofile is for workers only), and Go hands a child the
// soft limit the daemon was started with, not the one it raised for
// itself, unless the daemon sets the limit explicitly (syscall.Setrlimit).

// masterReserve is what a master holds beside its listening sockets:
// stdio, error logs of the old and new cycle, the file being parsed, the
// pid file. Each worker adds a channel (two descriptors), for the old and
// the new workers during a reload: workerReserve per CPU (worker_processes
// auto).
const (
	masterReserve = 64
	workerReserve = 4
)

// RaiseOpenFiles sets the soft RLIMIT_NOFILE to the hard limit, so that
// the nginx master we start inherits it, and returns the limit and the
// number of streams it allows. A failure to raise leaves the limit as it
// is and is returned beside what that limit allows.
func RaiseOpenFiles(workers int) (stream.OpenFiles, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return stream.OpenFiles{}, fmt.Errorf("getrlimit RLIMIT_NOFILE: %w", err)
	}
	want := rl
	want.Cur = rl.Max
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	if err != nil {
		err = fmt.Errorf("setrlimit RLIMIT_NOFILE %d: %w", want.Cur, err)
	} else {
		rl = want
	}
	return OpenFilesFor(rl.Cur, rl.Max, workersOrCPUs(workers)), err
}

// OpenFilesFor returns what a master started under soft and hard, with
// workers workers, allows.
func OpenFilesFor(soft, hard uint64, workers int) stream.OpenFiles {
	return stream.OpenFiles{Soft: soft, Hard: hard, MaxStreams: MaxStreams(soft, workers, workerNoFile(hard))}
}

// MaxStreams returns how many streams one nginx master may listen on:
// one descriptor per stream in the master, beside its reserve, under its
// soft limit; and, in each worker, a connection slot per stream within
// the largest worker_connections that nofile, the workers' limit, backs
// (slotCap), leaving slots for sessions: 1,024 (512 sessions), or half
// of them under a small limit.
func MaxStreams(soft uint64, workers int, nofile int) int {
	n := int(min(soft, 1<<30)) - masterReserve - workerReserve*max(1, workers)
	if c := slotCap(nofile); c > 0 {
		n = min(n, c-min(1024, c/2))
	}
	return max(0, n)
}

// workerNoFile is noFile for a daemon whose hard limit is hard: 65,536,
// or the hard limit when it is lower and a worker may not raise its own
// past it (it lacks CAP_SYS_RESOURCE: not root, or root in a container
// without it; nginx would log "setrlimit(RLIMIT_NOFILE, 65536) failed").
func workerNoFile(hard uint64) int {
	const want = 65536
	if canRaiseHard() {
		return want
	}
	return int(min(hard, want))
}

// canRaiseHard reports whether this process (and so the nginx it starts)
// may raise its hard open-file limit: root with CAP_SYS_RESOURCE.
func canRaiseHard() bool {
	if !isRoot() {
		return false
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<capSysResource) != 0
		}
	}
	return false
}

// capSysResource is CAP_SYS_RESOURCE's bit (linux/capability.h).
const capSysResource = 24

// ForMaster returns of for a running master pid that we adopt: a master
// keeps the limit it was started under (by an earlier daemon, under
// another limit) until it restarts, so when its soft limit is lower, the
// streams it allows are counted from it, and adopted says so.
func ForMaster(of stream.OpenFiles, pid, workers int) (_ stream.OpenFiles, lower bool) {
	soft, err := softNoFile(pid)
	if err != nil || soft >= of.Soft {
		return of, false
	}
	return OpenFilesFor(soft, of.Hard, workersOrCPUs(workers)), true
}

// softNoFile reads the soft "Max open files" of process pid.
func softNoFile(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if f[0] == "unlimited" {
					return 1 << 62, nil
				}
				return strconv.ParseUint(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no Max open files in /proc/%d/limits", pid)
}

// workersOrCPUs is the number of workers a master runs: workers, or one
// per CPU for 0 (worker_processes auto).
func workersOrCPUs(workers int) int {
	if workers > 0 {
		return workers
	}
	return runtime.NumCPU()
}
