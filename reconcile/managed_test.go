package reconcile

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
