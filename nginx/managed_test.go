package nginx

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// A pid file that names a live process that is not our nginx master (the
// pid was reused) is not trusted.
func TestPIDFileNamingAnotherProcessIsNotTrusted(t *testing.T) {
	dir := t.TempDir()
	m := &Managed{conf: filepath.Join(dir, "nginx.conf"), pidFile: filepath.Join(dir, "nginx.pid")}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for _, content := range []string{strconv.Itoa(cmd.Process.Pid), strconv.Itoa(os.Getpid()), "999999999", "garbage", ""} {
		if err := os.WriteFile(m.pidFile, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if pid := m.PID(); pid != 0 {
			t.Errorf("pid file %q trusted as nginx master %d", content, pid)
		}
	}
}

func TestWorkerConnectionsFollowTheStreams(t *testing.T) {
	m := &Managed{}
	for _, tc := range []struct{ streams, nofile, want int }{
		{0, 65536, 8192},
		{100, 65536, 8192},
		{3000, 65536, 8192},
		{5000, 65536, 16384},
		{10000, 65536, 32768},
		{10000, 20000, 19936}, // this machine's hard limit: a slot is a descriptor
		{0, 0, 8192},
	} {
		m.streams = tc.streams
		if got := m.connections(tc.nofile); got != tc.want {
			t.Errorf("%d streams, nofile %d: %d, want %d", tc.streams, tc.nofile, got, tc.want)
		}
	}
	m.cfg.WorkerConnections = 4096
	if got := m.connections(65536); got != 4096 {
		t.Errorf("a configured value is not kept: %d", got)
	}
}
