package nginx

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Lines as nginx 1.22 writes them; %d is replaced by the pid that sent
// the signal.
const (
	reloadLines = `2026/11/30 02:00:00 [notice] 100#100: signal 1 (SIGHUP) received from %d, reconfiguring
2026/11/30 02:00:00 [notice] 100#100: reconfiguring
2026/11/30 02:00:00 [notice] 100#100: using the "epoll" event method
2026/11/30 02:00:00 [notice] 100#100: start worker processes
2026/11/30 02:00:00 [notice] 100#100: start worker process 102
2026/11/30 02:00:00 [notice] 101#101: gracefully shutting down
2026/11/30 02:00:00 [notice] 101#101: exiting
2026/11/30 02:00:00 [notice] 101#101: exit
2026/11/30 02:00:00 [notice] 100#100: signal 17 (SIGCHLD) received from 101
2026/11/30 02:00:00 [notice] 100#100: worker process 101 exited with code 0
2026/11/30 02:00:00 [notice] 100#100: signal 29 (SIGIO) received
`
	reopenLines = `2026/11/30 02:00:01 [notice] 100#100: signal 10 (SIGUSR1) received from %d, reopening logs
2026/11/30 02:00:01 [notice] 100#100: reopening logs
`
	quitLines = `2026/11/30 02:00:02 [notice] 102#102: signal 3 (SIGQUIT) received from %d, shutting down
2026/11/30 02:00:02 [notice] 102#102: gracefully shutting down
2026/11/30 02:00:02 [notice] 100#100: signal 17 (SIGCHLD) received from 102
2026/11/30 02:00:02 [notice] 100#100: worker process 102 exited with code 0
`
	killedLines = `2026/11/30 02:00:03 [notice] 100#100: signal 17 (SIGCHLD) received from 103
2026/11/30 02:00:03 [alert] 100#100: worker process 103 exited on signal 9
2026/11/30 02:00:03 [notice] 100#100: start worker process 104
`
)

// Signalled reports what someone else did to nginx, and not our own
// reloads, reopens and stops of workers, nor the exits they cause.
func TestSignalledIgnoresOurOwnSignals(t *testing.T) {
	const self, other = 4242, 777
	dir := t.TempDir()
	m := &Managed{conf: filepath.Join(dir, "nginx.conf"), pidFile: filepath.Join(dir, "nginx.pid"),
		errorLog: filepath.Join(dir, "error.log"), selfPID: self}
	if err := os.WriteFile(m.errorLog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m.Signalled() // the first look cannot tell and says so
	for _, tc := range []struct {
		what  string
		lines string
		want  bool
	}{
		{"nothing", "", false},
		{"our reload", sprintf(reloadLines, self), false},
		{"our reopen", sprintf(reopenLines, self), false},
		{"our SIGQUIT to a worker", sprintf(quitLines, self), false},
		{"someone's nginx -s reload", sprintf(reloadLines, other), true},
		{"someone's reopen", sprintf(reopenLines, other), true},
		{"someone's SIGQUIT to a worker", sprintf(quitLines, other), true},
		{"a worker killed", killedLines, true},
		{"our reload, then someone's", sprintf(reloadLines, self) + sprintf(reloadLines, other), true},
		{"a worker failing", "2026/11/30 02:00:04 [alert] 100#100: worker process 105 exited with code 1\n", true},
		{"a pid that begins with ours", sprintf(reloadLines, self*10), true},
	} {
		appendLog(t, m.errorLog, tc.lines)
		if got := m.Signalled(); got != tc.want {
			t.Errorf("%s: Signalled() = %v, want %v", tc.what, got, tc.want)
		}
	}
}

// A line nginx is still writing is judged once it is whole.
func TestSignalledReadsWholeLines(t *testing.T) {
	dir := t.TempDir()
	m := &Managed{conf: filepath.Join(dir, "nginx.conf"), pidFile: filepath.Join(dir, "nginx.pid"),
		errorLog: filepath.Join(dir, "error.log"), selfPID: 4242}
	if err := os.WriteFile(m.errorLog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m.Signalled()
	line := sprintf(reloadLines, 42420)[:80] // "received from 4242" so far
	appendLog(t, m.errorLog, line[:strings.Index(line, "4242")+4])
	if m.Signalled() {
		t.Fatal("a half-written line was judged")
	}
	appendLog(t, m.errorLog, "0, reconfiguring\n")
	if !m.Signalled() {
		t.Fatal("someone's reload (pid 42420), written in two parts, was not reported")
	}
}

func sprintf(format string, pid int) string {
	return strings.ReplaceAll(format, "%d", strconv.Itoa(pid))
}

func appendLog(t *testing.T, path, lines string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(lines); err != nil {
		t.Fatal(err)
	}
}
