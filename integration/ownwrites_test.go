package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// quietFor is how long the pass counter must stay still to count as
// settled: longer than the watcher's settle time (100 ms) plus nginx's
// reload spacing (100 ms) that a pass caused by our own write would wait.
const quietFor = 600 * time.Millisecond

// settledPasses waits until the daemon's pass counter stays the same for
// quietFor and returns it; it fails the test if it never does within 10 s.
func settledPasses(t *testing.T, d *daemon) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last, since := d.counters()["passes"], time.Now()
	for time.Since(since) < quietFor {
		if time.Now().After(deadline) {
			t.Fatalf("passes never settled (last %v)", last)
		}
		time.Sleep(20 * time.Millisecond)
		if p := d.counters()["passes"]; p != last {
			last, since = p, time.Now()
		}
	}
	return last
}

// Each write costs one pass: the pass's own file writes, which the
// config-directory watcher hears, no longer cause a second pass that
// finds nothing to do.
func TestOwnWritesCostOnePassEach(t *testing.T) {
	t.Parallel()
	const n = 5
	d := startDaemon(t, n)
	be := startEcho(t, "A:")
	before := settledPasses(t, d)
	for i := range n {
		d.mustPut("tcp", d.portMin+i, `{"backend":"`+be.addr()+`"}`)
		if got := settledPasses(t, d) - before; got != float64(i+1) {
			t.Fatalf("%d sequential PUTs took %v passes, want %d", i+1, got, i+1)
		}
	}
	for i := range n {
		mustEcho(t, d.portMin+i, "A:")
	}
}

// A hand edit of one of our files followed by `nginx -s reload` (another
// process's SIGHUP) is still repaired, and traffic goes to the stream's
// own backend again.
func TestOwnWritesHandEditAndNginxReloadIsRepaired(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1)
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+a.addr()+`"}`)
	file := filepath.Join(d.dataDir, "stream.d", fmt.Sprintf("stream-tcp-%d.conf", d.portMin))
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(want), a.addr(), b.addr(), 1)
	if err := os.WriteFile(file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	ngx := filepath.Join(d.dataDir, "nginx")
	reload := exec.Command(nginxBin, "-p", ngx, "-c", filepath.Join(ngx, "nginx.conf"),
		"-e", filepath.Join(ngx, "error.log"), "-s", "reload")
	if out, err := reload.CombinedOutput(); err != nil {
		t.Fatalf("nginx -s reload: %v\n%s", err, out)
	}
	eventually(t, "the file restored", 5*time.Second, func() bool {
		got, err := os.ReadFile(file)
		return err == nil && string(got) == string(want)
	})
	eventually(t, "traffic to backend A again", 5*time.Second, func() bool { return forwards(t, d.portMin, "A:") })
	eventually(t, "the repair counted", 5*time.Second, func() bool { return d.counters()["drift_repairs"] >= 1 })
}
