package integration

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The reconciler observes the data plane, not its own records: what nginx
// listens on, the main configuration on disk, nginx's error log and our
// files as they really are. Each scenario changes one of them under the
// daemon and expects traffic to flow again without anyone's help.

// mainConf is the managed nginx.conf of d.
func mainConf(d *daemon) string { return filepath.Join(d.dataDir, "nginx", "nginx.conf") }

// dropInclude rewrites the main configuration without its include of the
// stream directory, as a careless hand edit would.
func dropInclude(t *testing.T, d *daemon) []byte {
	t.Helper()
	orig, err := os.ReadFile(mainConf(d))
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.SplitAfter(string(orig), "\n") {
		if !strings.Contains(line, "include ") {
			kept = append(kept, line)
		}
	}
	edited := strings.Join(kept, "")
	if edited == string(orig) {
		t.Fatal("the main configuration has no include to remove")
	}
	if err := os.WriteFile(mainConf(d), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	return orig
}

// streamState is the state of stream tcp/port.
func streamState(d *daemon, port int) any {
	_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", port), "")
	st, _ := m["status"].(map[string]any)
	return st["state"]
}

// forwards reports whether bytes sent to port come back from tag.
func forwards(t *testing.T, port int, tag string) bool {
	got, err := echo(t, port, "x\n")
	return err == nil && got == tag+"x\n"
}

// Finding 2: the include removed from nginx.conf by hand and nginx
// reloaded: every port closes. The daemon sees the main configuration
// differ and the ports not listening, rewrites it and reloads, within a
// few seconds; a new stream forwards too.
func TestObserveMainConfigWithoutIncludeIsRepaired(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	orig := dropInclude(t, d)
	if !d.signalNginx(syscall.SIGHUP) {
		t.Fatal("no nginx master to reload")
	}
	eventually(t, "the main configuration restored", 5*time.Second, func() bool {
		b, err := os.ReadFile(mainConf(d))
		return err == nil && string(b) == string(orig)
	})
	eventually(t, "traffic forwarded again", 5*time.Second, func() bool { return forwards(t, d.portMin, "A:") })
	eventually(t, "the repair counted", 5*time.Second, func() bool {
		c := d.counters()
		return c["main_config_repairs"]+c["listen_drift"] >= 1
	})
	if !strings.Contains(d.logs.String(), "main nginx configuration") {
		t.Fatal("no log line for the repair of the main configuration")
	}
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin+1, "A:")
	if code, m := d.api("GET", "/readyz", ""); code != 200 {
		t.Fatalf("/readyz after the repair: %d %v", code, m)
	}
}

// Finding 2, restart case: the same edit and reload while the daemon is
// down. The recorded fingerprint still matches; the daemon must not trust
// it: it rewrites the file and reloads, and the port forwards again.
func TestObserveMainConfigEditedWhileDaemonDown(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	d.stop()
	dropInclude(t, d)
	if !d.signalNginx(syscall.SIGHUP) {
		t.Fatal("no nginx master to reload")
	}
	waitRefused(t, d.portMin)
	d.start()
	eventually(t, "traffic forwarded after the restart", 5*time.Second, func() bool { return forwards(t, d.portMin, "A:") })
	if state := streamState(d, d.portMin); state != "active" {
		t.Fatalf("state %v", state)
	}
}

// Finding 3: nginx.conf deleted, then the master dies. The daemon writes
// the file again and starts nginx.
func TestObserveMainConfigDeletedThenMasterDies(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	if err := os.Remove(mainConf(d)); err != nil {
		t.Fatal(err)
	}
	old := d.nginxPID()
	if !d.signalNginx(syscall.SIGKILL) {
		t.Fatal("no nginx master to kill")
	}
	eventually(t, "a new nginx master", 10*time.Second, func() bool {
		pid := d.nginxPID()
		return pid != 0 && pid != old
	})
	eventually(t, "traffic forwarded by the new master", 10*time.Second, func() bool { return forwards(t, d.portMin, "A:") })
	if _, err := os.Stat(mainConf(d)); err != nil {
		t.Fatalf("main configuration: %v", err)
	}
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin+1, "A:")
}

// Finding 5: nginx's error log deleted. The next write is applied (201
// active, forwarding), and nginx writes to a log at the path again; the
// same after a daemon restart.
func TestObserveErrorLogDeleted(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	errorLog := filepath.Join(d.dataDir, "nginx", "error.log")
	if err := os.Remove(errorLog); err != nil {
		t.Fatal(err)
	}
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin+1, "A:")
	if _, err := os.Stat(errorLog); err != nil {
		t.Fatalf("error log not recreated: %v", err)
	}
	if err := os.Remove(errorLog); err != nil {
		t.Fatal(err)
	}
	d.stop()
	d.start()
	d.mustPut("tcp", d.portMin+2, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin+2, "A:")
	mustEcho(t, d.portMin, "A:")
}

// Finding 5, rotation by mv and a new empty file: nginx keeps writing to
// the old inode until it reopens its logs. The first write after the
// rotation must still be confirmed, not time out into a 503, and nginx's
// later lines go to the new file.
func TestObserveErrorLogRotated(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	errorLog := filepath.Join(d.dataDir, "nginx", "error.log")
	if err := os.Rename(errorLog, errorLog+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(errorLog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the write after the rotation took %v", took)
	}
	mustEcho(t, d.portMin+1, "A:")
	b, err := os.ReadFile(errorLog)
	if err != nil || !strings.Contains(string(b), "start worker processes") {
		t.Fatalf("nginx does not write its reload to the new log: %q %v", b, err)
	}
	d.mustPut("tcp", d.portMin+2, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin+2, "A:")
}

// Finding 7: a stream file that cannot be replaced nor removed (chattr
// +i) fails only its own stream, with the error; other streams are
// created, changed and deleted as usual.
func TestObserveImmutableFileFailsOnlyItsStream(t *testing.T) {
	t.Parallel()
	requireTool(t, "chattr")
	requireRoot(t, "for chattr +i")
	d := startDaemon(t, 3)
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+a.addr()+`"}`)
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+a.addr()+`"}`)
	file := filepath.Join(d.dataDir, "stream.d", fmt.Sprintf("stream-tcp-%d.conf", d.portMin))
	makeImmutable(t, file)

	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), `{"backend":"`+b.addr()+`"}`)
	if code != 422 {
		t.Fatalf("PUT on the immutable file's stream: %d %v", code, m)
	}
	st := m["error"].(map[string]any)
	if !strings.Contains(fmt.Sprint(st["message"]), "operation not permitted") {
		t.Fatalf("the error does not say why: %v", m)
	}
	// The refused write is rolled back: the stream keeps its last good
	// file, which nginx still serves.
	eventually(t, "the stream back at its previous backend", 5*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
		return fmt.Sprint(m["backends"]) == "["+a.addr()+"]"
	})
	mustEcho(t, d.portMin, "A:")

	d.mustPut("tcp", d.portMin+2, `{"backend":"`+b.addr()+`"}`)
	mustEcho(t, d.portMin+2, "B:")
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+b.addr()+`"}`)
	mustEcho(t, d.portMin+1, "B:")
	if code, _ := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+1), ""); code != 204 && code != 200 {
		t.Fatalf("DELETE another stream: %d", code)
	}
	waitRefused(t, d.portMin+1)

	exec.Command("chattr", "-i", file).Run()
	d.mustPut("tcp", d.portMin, `{"backend":"`+b.addr()+`"}`)
	mustEcho(t, d.portMin, "B:")
}

// Finding 12: a FIFO or a symlink named like a stream file is drift: it is
// replaced by our regular file, never opened for reading in a way that
// blocks or follows the link; the daemon still stops on SIGTERM.
func TestObserveNonRegularFilesAreReplaced(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 4)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	dir := filepath.Join(d.dataDir, "stream.d")
	name := func(port int) string { return filepath.Join(dir, fmt.Sprintf("stream-tcp-%d.conf", port)) }
	if err := syscall.Mkfifo(name(d.portMin+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(name(d.portMin+2), 0o644); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "outside.conf")
	if err := os.WriteFile(outside, []byte("# not ours\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, name(d.portMin+3)); err != nil {
		t.Fatal(err)
	}
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin+1, "A:")
	d.mustPut("tcp", d.portMin+3, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin+3, "A:")
	for _, p := range []int{d.portMin + 1, d.portMin + 3} {
		fi, err := os.Lstat(name(p))
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s is not our regular file: %v %v", name(p), fi, err)
		}
	}
	eventually(t, "the FIFO of no stream removed", 5*time.Second, func() bool {
		_, err := os.Lstat(name(d.portMin + 2))
		return os.IsNotExist(err)
	})
	if b, _ := os.ReadFile(outside); string(b) != "# not ours\n" {
		t.Fatalf("the symlink's target was written: %q", b)
	}
	mustEcho(t, d.portMin, "A:")
	if code, m := d.api("GET", "/readyz", ""); code != 200 {
		t.Fatalf("/readyz: %d %v", code, m)
	}
	d.stop() // fails the test if SIGTERM does not stop it
}

// A pass that does not finish (here: nginx's master stopped while it is
// asked to reload) makes /readyz say the reconciler is stuck, long before
// the apply timeout ends the pass; it is ready again once nginx answers.
func TestObserveStuckPassIsNotReady(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2, "STUCK_AFTER=1s", "APPLY_TIMEOUT=20s")
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	if !d.signalNginx(syscall.SIGSTOP) {
		t.Fatal("no nginx master to stop")
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			d.signalNginx(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	put := make(chan int, 1)
	go func() {
		req, _ := newRequest("PUT", d.url(fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+1)), `{"backend":"`+be.addr()+`"}`)
		resp, err := d.client.Do(req)
		if err != nil {
			put <- 0
			return
		}
		resp.Body.Close()
		put <- resp.StatusCode
	}()
	eventually(t, "/readyz reporting the stuck pass", 10*time.Second, func() bool {
		code, m := d.api("GET", "/readyz", "")
		return code == 503 && strings.Contains(fmt.Sprint(m["reasons"]), "stuck")
	})
	resume()
	if code := <-put; code != http.StatusCreated {
		t.Fatalf("PUT once nginx answers again: %d", code)
	}
	mustEcho(t, d.portMin+1, "A:")
	eventually(t, "/readyz ready again", 10*time.Second, func() bool {
		code, _ := d.api("GET", "/readyz", "")
		return code == 200
	})
}

// The pid file is a record too: deleted, or replaced by a FIFO, while nginx
// runs. The daemon finds the master by looking at /proc, keeps it (no
// second nginx, no restart that would close every port), writes the pid
// file again, and applies writes as usual.
func TestObservePidFileGoneKeepsTheMaster(t *testing.T) {
	t.Parallel()
	for _, damage := range []string{"deleted", "fifo"} {
		t.Run(damage, func(t *testing.T) {
			d := startDaemon(t, 2)
			be := startEcho(t, "A:")
			d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
			master, starts := d.nginxPID(), d.counters()["nginx_starts"]
			if master == 0 {
				t.Fatal("no nginx master")
			}
			pidFile := filepath.Join(d.dataDir, "nginx", "nginx.pid")
			if err := os.Remove(pidFile); err != nil {
				t.Fatal(err)
			}
			if damage == "fifo" {
				if err := syscall.Mkfifo(pidFile, 0o644); err != nil {
					t.Fatal(err)
				}
				// The harness reads the pid file: never leave a FIFO there.
				t.Cleanup(func() {
					if fi, err := os.Lstat(pidFile); err == nil && !fi.Mode().IsRegular() {
						os.Remove(pidFile)
					}
				})
			}
			d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
			mustEcho(t, d.portMin+1, "A:")
			mustEcho(t, d.portMin, "A:")
			eventually(t, "the pid file written again", 5*time.Second, func() bool {
				fi, err := os.Lstat(pidFile)
				return err == nil && fi.Mode().IsRegular() && d.nginxPID() == master
			})
			if got := d.counters()["nginx_starts"]; got != starts {
				t.Fatalf("nginx was started again (%v starts, were %v): the running master was not found", got, starts)
			}
		})
	}
}

// nginx's error log replaced by a FIFO (or a symlink): reading it must not
// block the daemon, and nginx must not block writing to it. It is removed,
// nginx creates a regular log again, and writes apply.
func TestObserveErrorLogNotARegularFile(t *testing.T) {
	t.Parallel()
	for _, damage := range []string{"fifo", "symlink"} {
		t.Run(damage, func(t *testing.T) {
			d := startDaemon(t, 2, "APPLY_TIMEOUT=5s")
			be := startEcho(t, "A:")
			d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
			errorLog := filepath.Join(d.dataDir, "nginx", "error.log")
			outside := filepath.Join(t.TempDir(), "outside.log")
			if err := os.WriteFile(outside, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(errorLog); err != nil {
				t.Fatal(err)
			}
			var err error
			if damage == "fifo" {
				err = syscall.Mkfifo(errorLog, 0o644)
			} else {
				err = os.Symlink(outside, errorLog)
			}
			if err != nil {
				t.Fatal(err)
			}
			d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
			mustEcho(t, d.portMin+1, "A:")
			fi, err := os.Lstat(errorLog)
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("error log is not a regular file again: %v %v", fi, err)
			}
			if b, _ := os.ReadFile(outside); len(b) != 0 {
				t.Fatalf("nginx wrote through the symlink: %q", b)
			}
		})
	}
}

// makeImmutable sets chattr +i on file until the test ends. A file system
// that cannot skips the test, except in CI, where it fails.
func makeImmutable(t *testing.T, file string) {
	t.Helper()
	if out, err := exec.Command("chattr", "+i", file).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chattr +i not supported here: %v %s", err, out)
		}
		t.Skipf("chattr +i not supported here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", file).Run() })
}

// A delete whose file cannot be removed is not answered 204 (the port
// still forwards, nginx still loads the file): 503 not_applied, saying
// why. Once the file can go, the next pass removes it and the port
// closes, with nobody asking again.
func TestObserveDeleteOfAnImmutableFileIsNotClaimed(t *testing.T) {
	t.Parallel()
	requireTool(t, "chattr")
	requireRoot(t, "for chattr +i")
	d := startDaemon(t, 2, "RESYNC_INTERVAL=1s")
	a := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+a.addr()+`"}`)
	file := filepath.Join(d.dataDir, "stream.d", fmt.Sprintf("stream-tcp-%d.conf", d.portMin))
	makeImmutable(t, file)

	code, m := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
	if e, _ := m["error"].(map[string]any); code != 503 || e["code"] != "not_applied" || !strings.Contains(fmt.Sprint(e["message"]), "could not be removed") {
		t.Fatalf("DELETE of a stream whose file cannot be removed: %d %v", code, m)
	}
	mustEcho(t, d.portMin, "A:") // the answer told the truth: it still forwards
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), ""); code != 404 {
		t.Fatalf("the delete was not stored: GET %d", code)
	}
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+a.addr()+`"}`) // others go on
	mustEcho(t, d.portMin+1, "A:")

	if out, err := exec.Command("chattr", "-i", file).CombinedOutput(); err != nil {
		t.Fatalf("chattr -i: %v %s", err, out)
	}
	waitRefused(t, d.portMin)
	if _, err := os.Lstat(file); !os.IsNotExist(err) {
		t.Fatalf("the file is still there: %v", err)
	}
}
