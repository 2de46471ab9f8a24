package nginx

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

func TestMaxStreamsFollowsTheOpenFileLimit(t *testing.T) {
	for _, tc := range []struct {
		soft         uint64
		workers      int
		nofile, want int
	}{
		{1024, 2, 65536, 1024 - 64 - 8},      // a default shell: the master's limit caps
		{256, 2, 65536, 256 - 64 - 8},        // the integration test's limit
		{65536, 2, 65536, 65536 - 64 - 1024}, // systemd's LimitNOFILE: the workers' slots cap
		{1 << 20, 64, 65536, 65536 - 64 - 1024},
		{20000, 2, 20000, 20000 - 64 - 1024}, // this machine: 10,000 streams fit
		{1024, 64, 65536, 1024 - 64 - 256},   // many workers, many channels
		{1024, 0, 0, 1024 - 64 - 4},          // unknown workers' limit: the master's
		{40, 2, 65536, 0},                    // too low for any stream
		{1024, 2, 1024, 480},                 // not root: the workers' slots cap (960, half for sessions)
		{80, 2, 80, 8},                       // the integration test's limit
		{^uint64(0), 2, 0, 1<<30 - 72},       // RLIM_INFINITY
	} {
		if got := MaxStreams(tc.soft, tc.workers, tc.nofile); got != tc.want {
			t.Errorf("soft %d, %d workers, nofile %d: %d streams, want %d", tc.soft, tc.workers, tc.nofile, got, tc.want)
		}
	}
}

// As root with CAP_SYS_RESOURCE, the main configuration backs every connection slot with a
// descriptor: worker_rlimit_nofile is never below worker_connections (a
// non-root worker cannot go past the daemon's hard limit).
func TestWorkerNoFileBacksWorkerConnections(t *testing.T) {
	m := &Managed{}
	m.cfg.WorkerConnections = 100000
	conf := string(m.renderMain())
	want := fmt.Sprintf("worker_rlimit_nofile %d;", noFile())
	if canRaiseHard() {
		want = "worker_rlimit_nofile 100064;"
	}
	if !strings.Contains(conf, want) || !strings.Contains(conf, "worker_connections 100000;") {
		t.Errorf("main configuration:\n%s", conf)
	}
}

// An adopted master started under a lower soft limit than ours counts
// from its own; one under ours or higher changes nothing.
func TestForMasterUsesTheMastersLimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	ours := OpenFilesFor(rl.Cur+1000, rl.Max+1000, 2)
	got, lower := ForMaster(ours, os.Getpid(), 0)
	if !lower || got.Soft != rl.Cur || got.MaxStreams != OpenFilesFor(rl.Cur, rl.Max+1000, runtime.NumCPU()).MaxStreams {
		t.Errorf("a master under soft %d, ours %d: %+v lower=%v", rl.Cur, ours.Soft, got, lower)
	}
	same := OpenFilesFor(rl.Cur, rl.Max, 2)
	if got, lower := ForMaster(same, os.Getpid(), 2); lower || got != same {
		t.Errorf("a master under our limit: %+v lower=%v", got, lower)
	}
}
