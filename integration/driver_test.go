package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// External mode: a system nginx that stopped is reported as not running
// (/v1/status, /readyz) once a reload finds no master to signal, and as
// running again once its service manager starts it and a reload reaches
// it; the streams are applied then.
func TestExternalNginxStoppedIsNotRunning(t *testing.T) {
	t.Parallel()
	sn := startSystemNginx(t)
	d := sn.daemon(t, 2)
	d.start()
	be := startEcho(t, "E:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin, "E:")
	if !d.nginxRunning(t) {
		t.Fatal("nginx_running false while the system nginx runs")
	}

	pidFile := filepath.Join(sn.dir, "nginx.pid")
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		t.Fatalf("system nginx pid file: %q", b)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	eventually(t, "the system nginx stopped", 10*time.Second, func() bool {
		_, err := os.Stat(pidFile)
		return os.IsNotExist(err)
	})
	// Drift makes a pass reload: the stream file removed by hand.
	os.Remove(filepath.Join(sn.streams, fmt.Sprintf("stream-tcp-%d.conf", d.portMin)))
	eventually(t, "nginx reported not running", 10*time.Second, func() bool {
		return !d.nginxRunning(t)
	})
	code, m := d.api("GET", "/readyz", "")
	if reasons, _ := m["reasons"].([]any); code != 503 || !slices.Contains(reasons, any("nginx is not running")) {
		t.Fatalf("/readyz with the system nginx stopped: %d %v", code, m)
	}

	if out, err := exec.Command(sn.wrapper).CombinedOutput(); err != nil {
		t.Fatalf("start the system nginx again: %v %s", err, out)
	}
	eventually(t, "ready again", 40*time.Second, func() bool {
		code, _ := d.api("GET", "/readyz", "")
		return code == 200
	})
	if !d.nginxRunning(t) {
		t.Fatal("nginx_running false once ready")
	}
	mustEcho(t, d.portMin, "E:")
}

// nginxRunning is what /v1/status says of nginx.
func (d *daemon) nginxRunning(t *testing.T) bool {
	t.Helper()
	code, m := d.api("GET", "/v1/status", "")
	rec, ok := m["reconciler"].(map[string]any)
	if code != 200 || !ok {
		t.Fatalf("/v1/status: %d %v", code, m)
	}
	return rec["nginx_running"] == true
}
