package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Started under a low open-file limit (soft 40, hard H), the daemon raises
// its soft limit to H and its nginx master inherits H (Go would hand it
// the original 40); it logs how many streams H allows and shows it in
// /v1/status; a new stream beyond that number is refused with words that
// name the limit and how to raise it, nothing is stored, and nginx keeps
// serving the others instead of failing with "Too many open files". A
// deleted stream frees its place.
func TestOpenFileLimitCapsStreamsClearly(t *testing.T) {
	requireTool(t, "prlimit")
	const allowed = 8
	// The daemon's reserve for an nginx master (nginx.MaxStreams): 64,
	// and 4 per worker (worker_processes auto).
	hard := allowed + 64 + 4*runtime.NumCPU()
	d := newDaemon(t, 2*allowed)
	d.wrap = []string{"prlimit", fmt.Sprintf("--nofile=40:%d", hard), "--"}
	d.start()

	eventually(t, "the log line on the limit", 5*time.Second, func() bool {
		return strings.Contains(d.logs.String(), fmt.Sprintf(`"nofile_soft":%d,"nofile_hard":%d,"max_streams":%d`, hard, hard, allowed))
	})
	if !strings.Contains(d.logs.String(), "the open-file limit caps the number of streams below PORT_RANGE") {
		t.Errorf("no warning that the limit caps the streams below PORT_RANGE")
	}
	_, st := d.api("GET", "/v1/status", "")
	of, _ := st["reconciler"].(map[string]any)["open_files"].(map[string]any)
	if of["soft"] != float64(hard) || of["hard"] != float64(hard) || of["max_streams"] != float64(allowed) {
		t.Errorf("/v1/status reconciler.open_files = %v, want soft and hard %d, max_streams %d", of, hard, allowed)
	}

	be := startEcho(t, "be:")
	var items []string
	for i := 0; i < allowed; i++ {
		items = append(items, fmt.Sprintf(`{"protocol":"tcp","listen":%d,"backends":["%s"]}`, d.portMin+i, be.addr()))
	}
	if code, m := d.api("POST", "/v1/import", `{"streams":[`+strings.Join(items, ",")+`]}`); code != 200 || m["failed"] != nil {
		t.Fatalf("import of %d streams: %d %v", allowed, code, m)
	}
	if got := nofileOf(t, d.nginxPID()); got != strconv.Itoa(hard) {
		t.Errorf("the nginx master's soft open-file limit is %s, want the raised %d", got, hard)
	}

	extra := d.portMin + allowed
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", extra), fmt.Sprintf(`{"backend":"%s"}`, be.addr()))
	e, _ := m["error"].(map[string]any)
	msg, _ := e["message"].(string)
	if code != 507 || e["code"] != "limit_reached" || !strings.Contains(msg, fmt.Sprintf("lets nginx listen on at most %d streams", allowed)) ||
		!strings.Contains(msg, "ulimit -n") || !strings.Contains(msg, "LimitNOFILE=") || !strings.Contains(msg, "ulimits: nofile") {
		t.Fatalf("a stream beyond the limit: %d %v, want an error naming the limit and how to raise it", code, m)
	}
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", extra), ""); code != 404 {
		t.Errorf("the refused stream was stored: GET %d", code)
	}
	// POST, which picks the port, gets the same answer, not no_free_port.
	if code, m := d.api("POST", "/v1/streams", fmt.Sprintf(`{"backend":"%s"}`, be.addr())); code != 507 {
		t.Errorf("a POST beyond the limit: %d %v, want 507 limit_reached", code, m)
	}
	for i := 0; i < allowed; i++ {
		mustEcho(t, d.portMin+i, "be:")
	}
	waitRefused(t, extra)
	// Nor are its workers sized past what they may open.
	b, _ := os.ReadFile(filepath.Join(d.dataDir, "nginx", "error.log"))
	for _, bad := range []string{"Too many open files", "setrlimit(RLIMIT_NOFILE", "exceed open file resource limit"} {
		if strings.Contains(string(b), bad) {
			t.Errorf("nginx's error.log says %q:\n%s", bad, b)
		}
	}

	if code, _ := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), ""); code != 204 {
		t.Fatalf("DELETE: %d", code)
	}
	d.mustPut("tcp", extra, fmt.Sprintf(`{"backend":"%s"}`, be.addr()))
	mustEcho(t, extra, "be:")
}

// nofileOf returns the soft "Max open files" of process pid.
func nofileOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatalf("limits of nginx master %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			return strings.Fields(rest)[0]
		}
	}
	t.Fatalf("no Max open files in /proc/%d/limits", pid)
	return ""
}

// An nginx master keeps the limit it was started under: a daemon that
// adopts one started under a lower limit (an upgrade, a restart under a
// raised limit) counts the streams it allows from the master's limit, says
// so, and refuses beyond it rather than letting nginx fail.
func TestAdoptedMasterKeepsItsOpenFileLimit(t *testing.T) {
	requireTool(t, "prlimit")
	const allowed = 4
	low := allowed + 64 + 4*runtime.NumCPU()
	d := newDaemon(t, 4*allowed)
	d.wrap = []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", low, low), "--"}
	d.start()
	master := d.nginxPID()
	d.stop()

	high := low + 3*allowed
	d.wrap = []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", high, high), "--"}
	d.start()
	if pid := d.nginxPID(); pid != master {
		t.Fatalf("nginx master %d, want the adopted %d", pid, master)
	}
	eventually(t, "the warning on the adopted master's limit", 5*time.Second, func() bool {
		return strings.Contains(d.logs.String(), fmt.Sprintf(`"pid":%d,"nofile_soft":%d,"max_streams":%d`, master, low, allowed))
	})
	_, st := d.api("GET", "/v1/status", "")
	if of, _ := st["reconciler"].(map[string]any)["open_files"].(map[string]any); of["max_streams"] != float64(allowed) {
		t.Errorf("/v1/status reconciler.open_files = %v, want max_streams %d (the master's)", of, allowed)
	}
	be := startEcho(t, "be:")
	for i := 0; i < allowed; i++ {
		d.mustPut("tcp", d.portMin+i, fmt.Sprintf(`{"backend":"%s"}`, be.addr()))
	}
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+allowed), fmt.Sprintf(`{"backend":"%s"}`, be.addr()))
	if e, _ := m["error"].(map[string]any); code != 507 || e["code"] != "limit_reached" || !strings.Contains(fmt.Sprint(e["message"]), "ulimit -n") {
		t.Fatalf("a stream beyond the adopted master's limit: %d %v", code, m)
	}
	for i := 0; i < allowed; i++ {
		mustEcho(t, d.portMin+i, "be:")
	}
}
