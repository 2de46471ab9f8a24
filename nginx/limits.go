package nginx

import (
	"fmt"
	"runtime"
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
func RaiseOpenFiles() (stream.OpenFiles, error) {
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
	return OpenFilesFor(rl.Cur, rl.Max, runtime.NumCPU()), err
}

// OpenFilesFor returns what a master started under soft and hard, with
// workers workers, allows.
func OpenFilesFor(soft, hard uint64, workers int) stream.OpenFiles {
	return stream.OpenFiles{Soft: soft, Hard: hard, MaxStreams: MaxStreams(soft, workers, workerNoFile(hard))}
}

// MaxStreams returns how many streams one nginx master may listen on:
// one descriptor per stream in the master, beside its reserve, under its
// soft limit; and, in each worker, a connection slot per stream, leaving
// 512 sessions (1,024 slots) within the largest worker_connections that
// nofile, the workers' limit, backs (connections).
func MaxStreams(soft uint64, workers int, nofile int) int {
	master := int(min(soft, 1<<30)) - masterReserve - workerReserve*max(1, workers)
	n := master
	if nofile > 0 {
		n = min(n, nofile/2-1024)
	}
	return max(0, n)
}

// workerNoFile is noFile for a daemon whose hard limit is hard.
func workerNoFile(hard uint64) int {
	const want = 65536
	if isRoot() {
		return want
	}
	return int(min(hard, want))
}
