package integration

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// The state database deleted, or replaced with mv (a botched restore),
// while the daemon runs: writes are refused with 503 saying what happened
// and how to recover instead of being acknowledged into a file the next
// start will not read, /readyz says why, and nginx keeps forwarding.
func TestStateFileGoneWhileRunningRefusesWrites(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, what string
		do         func(t *testing.T, path string)
	}{
		{"deleted", "was deleted", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced", "was replaced", func(t *testing.T, path string) {
			if err := os.WriteFile(path+".restore", []byte("not the file the daemon has open"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".restore", path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := startDaemon(t, 2)
			be := startEcho(t, "A:")
			d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
			tc.do(t, filepath.Join(d.dataDir, "state.db"))

			code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), `{"backend":"`+be.addr()+`"}`)
			e, _ := m["error"].(map[string]any)
			msg := fmt.Sprint(e["message"])
			if code != 503 || e["code"] != "store_unavailable" || !strings.Contains(msg, tc.what) || !strings.Contains(msg, "restart") || !strings.Contains(msg, "/v1/backup") {
				t.Fatalf("write after state.db %s: %d %v", tc.name, code, m)
			}
			if code, m := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), ""); code != 503 {
				t.Fatalf("delete after state.db %s: %d %v", tc.name, code, m)
			}
			code, raw := d.apiRaw("GET", "/readyz", "")
			if code != 503 || !strings.Contains(string(raw), tc.what) {
				t.Fatalf("/readyz after state.db %s: %d %s", tc.name, code, raw)
			}
			if _, err := os.Stat(filepath.Join(d.dataDir, "stream.d", fmt.Sprintf("stream-tcp-%d.conf", d.portMax))); err == nil {
				t.Fatal("the refused stream was applied")
			}
			mustEcho(t, d.portMin, "A:")
			// The state in use can still be saved.
			if code, raw := d.apiRaw("GET", "/v1/backup", ""); code != 200 || !bytes.Contains(raw, []byte(fmt.Sprintf("tcp/%d", d.portMin))) {
				t.Fatalf("backup: %d, %d bytes", code, len(raw))
			}
		})
	}
}

// A start on an empty state database while STREAM_CONFIG_PATH holds stream
// files of ours (state.db lost or replaced while the daemon was down) is
// refused, loudly, before nginx is touched: nginx keeps forwarding and is
// not reloaded. ALLOW_EMPTY_STATE=true starts empty and removes them. A
// fresh install (no files) starts as every other test shows.
func TestEmptyStateOverOurFilesRefusesToStart(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	d.stop()
	master := d.nginxPID()
	errorLog := filepath.Join(d.dataDir, "nginx", "error.log")
	before, _ := os.ReadFile(errorLog)
	db := filepath.Join(d.dataDir, "state.db")
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}

	out, err := d.runToExit()
	if err == nil || !strings.Contains(out, "refusing to start") || !strings.Contains(out, "ALLOW_EMPTY_STATE") ||
		!strings.Contains(out, "restore a backup") || !strings.Contains(out, fmt.Sprintf("stream-tcp-%d.conf", d.portMin)) {
		t.Fatalf("start on an empty state over our files: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(d.dataDir, "stream.d", fmt.Sprintf("stream-tcp-%d.conf", d.portMin))); err != nil {
		t.Fatalf("the stream file is gone: %v", err)
	}
	after, _ := os.ReadFile(errorLog)
	if d.nginxPID() != master || master == 0 || bytes.Count(after, []byte("reconfiguring")) != bytes.Count(before, []byte("reconfiguring")) {
		t.Fatalf("nginx was restarted or reloaded: master %d then %d\n%s", master, d.nginxPID(), after[len(before):])
	}
	mustEcho(t, d.portMin, "A:")

	d.extraEnv = append(d.extraEnv, "ALLOW_EMPTY_STATE=true")
	d.start()
	waitRefused(t, d.portMin)
	if !strings.Contains(d.logs.String(), "ALLOW_EMPTY_STATE") {
		t.Fatal("no warning that every stream file is removed")
	}
}

// runToExit runs the daemon with the environment start gives it and
// returns its output once it exits (at most 15 s).
func (d *daemon) runToExit() (string, error) {
	d.t.Helper()
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "DATA_DIR="+d.dataDir, "NGINX_BIN="+nginxBin,
		fmt.Sprintf("PORT_RANGE=%d-%d", d.portMin, d.portMax), "BIND_ADDRESS=127.0.0.1",
		"BIND_PORT="+strconv.Itoa(d.apiPort), "STREAM_BIND_ADDRESS=127.0.0.1", "LOG_FORMAT=json")
	cmd.Env = append(cmd.Env, d.extraEnv...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
		d.t.Fatalf("the daemon did not exit within 15s:\n%s", out.String())
		return "", nil
	}
}

// nginx's session log reaches the daemon over a Unix socket that only
// nginx's workers may write to: a line forged by another user is refused
// by the socket itself, lines naming streams that do not exist make no
// series however many there are, and the daemon has no UDP port at all
// (so no stream can target the collector).
func TestTrafficLogOnlyFromNginxWorkers(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test runs a sender as another user: it needs root")
		}
		t.Skip("needs root to send as another user")
	}
	d := startDaemon(t, 2)
	be := startEcho(t, "")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	sock := filepath.Join(d.dataDir, "traffic.sock")

	// The socket belongs to the user nginx's workers run as, mode 0600.
	var st syscall.Stat_t
	if err := syscall.Stat(sock, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK || st.Mode&0o777 != 0o600 {
		t.Fatalf("traffic socket: mode %o, %v", st.Mode, err)
	}
	// (A worker just forked by a reload is root for a moment.)
	var workers map[uint32]bool
	eventually(t, "the socket owned by the workers' user", 5*time.Second, func() bool {
		workers = workerUIDs(t, d.nginxPID())
		return len(workers) == 1 && workers[st.Uid]
	})
	conf, _ := os.ReadFile(filepath.Join(d.dataDir, "nginx", "nginx.conf"))
	if !strings.Contains(string(conf), "syslog:server=unix:"+sock+",") {
		t.Fatalf("nginx.conf does not log to the socket:\n%s", conf)
	}

	// A user other than the workers' cannot write to it.
	forged := fmt.Sprintf("%d TCP 127.0.0.1 %s 999999 999999 0.001 200", d.portMin, be.addr())
	other := st.Uid + 1000
	logger := exec.Command("logger", "--socket", sock, "--udp", "--socket-errors=on", "--tag", "stream_conductor", forged)
	logger.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: other, Gid: other}}
	if out, err := logger.CombinedOutput(); err == nil || !strings.Contains(string(out), "ermission denied") {
		t.Fatalf("a line sent as uid %d: %v %s", other, err, out)
	}

	// Lines for made-up streams: dropped, no series, /metrics stays small.
	c, err := net.Dial("unixgram", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20000 {
		proto := []string{"TCP", "UDP"}[i%2]
		fmt.Fprintf(c, "<190>Nov 29 20:00:00 stream_conductor: %d %s 10.%d.%d.1 10.0.0.1:%d 1000 1000 0.001 200", 30000+i, proto, i/250, i%250, i)
	}
	// Then one real session's line: counted once every line before it is.
	fmt.Fprintf(c, "<190>Nov 29 20:00:00 stream_conductor: %d TCP 127.0.0.1 %s 7 5 0.001 200", d.portMin, be.addr())
	eventually(t, "the line for the real stream counted", 10*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
		tr, _ := m["traffic"].(map[string]any)
		return tr != nil && tr["sessions"] == float64(1)
	})
	_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
	if tr := m["traffic"].(map[string]any); tr["bytes_out"] != float64(7) || tr["bytes_in"] != float64(5) {
		t.Fatalf("the forged line was counted: %v", tr)
	}
	_, raw := d.apiRaw("GET", "/metrics", "")
	if n := strings.Count(string(raw), "stream_conductor_stream_sessions_total{"); n != 1 || len(raw) > 256<<10 {
		t.Fatalf("/metrics: %d bytes, %d session series", len(raw), n)
	}

	// No UDP socket in the daemon.
	if ports := udpSockets(t, d.cmd.Process.Pid); len(ports) > 0 {
		t.Fatalf("the daemon holds UDP sockets on ports %v", ports)
	}

	// A restart recreates the socket, and nginx's workers, which held the
	// old one, find the new one (a worker loses its first line).
	d.stop()
	d.start()
	var again syscall.Stat_t
	if err := syscall.Stat(sock, &again); err != nil || again.Ino == st.Ino || again.Mode&0o777 != 0o600 || again.Uid != st.Uid {
		t.Fatalf("socket after a restart: inode %d (was %d), mode %o, uid %d, %v", again.Ino, st.Ino, again.Mode, again.Uid, err)
	}
	msg := strings.Repeat("y", 99) + "\n"
	sessions := 0
	eventually(t, "sessions counted after a restart", 10*time.Second, func() bool {
		if sessions < 50 {
			sessions++
			c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMin))
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(c, msg)
			c.Close()
		}
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
		tr, _ := m["traffic"].(map[string]any)
		return tr != nil && tr["sessions"].(float64) >= 1 && tr["bytes_in"] == tr["sessions"].(float64)*100
	})
}

// workerUIDs returns the real uids of the workers of nginx master pid.
func workerUIDs(t *testing.T, master int) map[uint32]bool {
	t.Helper()
	uids := map[uint32]bool{}
	for _, pid := range procfs.Children(master) {
		if !bytes.HasPrefix(procfs.Cmdline(pid), []byte("nginx: worker process")) {
			continue
		}
		if uid, err := procfs.RealUID(pid); err == nil {
			uids[uid] = true
		}
	}
	return uids
}

// udpSockets returns the local ports of the UDP sockets process pid holds.
func udpSockets(t *testing.T, pid int) []int {
	t.Helper()
	if _, err := procfs.Stat(pid); err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	procfs.Sockets(pid, func(inode string) { inodes[inode] = true })
	var ports []int
	procfs.TablesOf(pid).Each(true, func(s procfs.Socket) {
		if inodes[s.Inode] {
			ports = append(ports, s.Port)
		}
	})
	return ports
}

// Finding 13: a token in the environment shorter than the 16 characters
// the token files need is refused at start, with what to do, and nothing
// listens.
func TestShortTokenInEnvironmentRefusesToStart(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"API_TOKEN=x", "API_READ_TOKEN=fifteen-chars-x"} {
		d := newDaemon(t, 1, v)
		out, err := d.runToExit()
		if err == nil || !strings.Contains(out, "at least 16") {
			t.Fatalf("%s: the daemon started or did not say why: %v\n%s", v, err, out)
		}
		if portFree(d.apiPort) == false {
			t.Fatalf("%s: something listens on the API port", v)
		}
	}
}
