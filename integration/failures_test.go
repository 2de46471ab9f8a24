package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGTERM and start again on the same data dir: the same streams, no file
// rewritten, no reload, and connections opened before keep flowing.
func TestRestartKeepsStreamsWithoutReload(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+a.addr()+`"}`)
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+b.addr()+`"}`)
	nginxBefore := d.nginxPID()

	live, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMin))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if got, err := roundTrip(live, "one\n"); err != nil || got != "A:one\n" {
		t.Fatalf("before restart: %q %v", got, err)
	}

	d.stop()
	// The data plane outlives the control plane.
	if got, err := roundTrip(live, "two\n"); err != nil || got != "A:two\n" {
		t.Fatalf("while the daemon is down: %q %v", got, err)
	}
	mustEcho(t, d.portMin+1, "B:")

	d.start()
	if pid := d.nginxPID(); pid != nginxBefore || pid == 0 {
		t.Fatalf("nginx master %d after restart, want the adopted %d", pid, nginxBefore)
	}
	c := d.counters()
	if c["nginx_reloads"] != 0 || c["nginx_starts"] != 0 || c["nginx_tests"] != 0 || c["files_written"] != 0 || c["files_removed"] != 0 || c["passes"] < 1 {
		t.Fatalf("restart did work it should not have: %v", c)
	}
	code, m := d.api("GET", "/v1/streams", "")
	streams := m["streams"].([]any)
	if code != 200 || len(streams) != 2 {
		t.Fatalf("list after restart: %d %v", code, m)
	}
	for _, s := range streams {
		if st := s.(map[string]any)["status"].(map[string]any)["state"]; st != "active" {
			t.Fatalf("stream %v is %v after restart", s.(map[string]any)["id"], st)
		}
	}
	if got, err := roundTrip(live, "three\n"); err != nil || got != "A:three\n" {
		t.Fatalf("connection opened before the restart: %q %v", got, err)
	}
	mustEcho(t, d.portMin, "A:")
	mustEcho(t, d.portMin+1, "B:")
}

// A backend name that does not resolve: 422 with nginx's message, the
// other streams keep working, and later writes still apply.
func TestUnresolvableBackendIs422(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)

	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+1), `{"backend":"no-such-host.invalid:80"}`)
	e, _ := m["error"].(map[string]any)
	if code != 422 || e["code"] != "nginx_rejected" || !strings.Contains(e["message"].(string), `host not found in upstream "no-such-host.invalid"`) {
		t.Fatalf("PUT with an unresolvable backend: %d %v", code, m)
	}
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+1), ""); code != 404 {
		t.Fatalf("the rejected stream is still in the store: GET %d", code)
	}
	mustEcho(t, d.portMin, "A:")

	// A rejected update keeps the stream as it was.
	code, _ = d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), `{"backend":"no-such-host.invalid:80"}`)
	if code != 422 {
		t.Fatalf("rejected update: %d", code)
	}
	mustEcho(t, d.portMin, "A:")
	_, m = d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
	if m["backends"].([]any)[0] != be.addr() {
		t.Fatalf("rejected update changed the stored stream: %v", m)
	}
	d.mustPut("tcp", d.portMin+2, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin+2, "A:")
	if err := d.nginxTest(); err != nil {
		t.Fatalf("nginx -t after the rejections: %v", err)
	}
}

// A listen port another process holds: 409 before anything is written.
func TestPortHeldByAnotherProcessIs409(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	before := d.counters()

	squatter, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(d.portMin+1))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+1), `{"backend":"`+be.addr()+`"}`)
	e, _ := m["error"].(map[string]any)
	if code != 409 || e["code"] != "port_in_use" || !strings.Contains(e["message"].(string), "Address already in use") {
		t.Fatalf("PUT on a held port: %d %v", code, m)
	}
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+1), ""); code != 404 {
		t.Fatal("the refused stream was stored")
	}
	if after := d.counters(); after["files_written"] != before["files_written"] || after["nginx_reloads"] != before["nginx_reloads"] {
		t.Fatalf("a refused write touched files or nginx: %v -> %v", before, after)
	}
	// POST skips the held port.
	code, m = d.api("POST", "/v1/streams", `{"backend":"`+be.addr()+`"}`)
	if code != 201 || m["listen"] != float64(d.portMin+2) {
		t.Fatalf("POST with a held port in the range: %d %v", code, m)
	}
	mustEcho(t, d.portMin, "A:")
	mustEcho(t, d.portMin+2, "A:")
}

// Invalid input: 400 naming the field; nginx -t still passes, the store is
// unchanged and existing streams carry traffic.
func TestInvalidInputIsRefused(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	_, before := d.apiRaw("GET", "/v1/streams", "")
	p := d.portMin + 1
	cases := []struct {
		name, method, path, body, field string
	}{
		{"port 0", "PUT", "/v1/streams/tcp/0", `{"backend":"a:1"}`, "listen"},
		{"port 70000", "PUT", "/v1/streams/tcp/70000", `{"backend":"a:1"}`, "listen"},
		{"outside the range", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax+2), `{"backend":"a:1"}`, "listen"},
		{"the API's own port", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.apiPort), `{"backend":"a:1"}`, "listen"},
		{"backend without port", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"backend"}`, "backends"},
		{"backend with ;", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"a:1; include /etc/passwd"}`, "backends"},
		{"backend with }", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"a:1 } server {"}`, "backends"},
		{"backend with space", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"a b:1"}`, "backends"},
		{"backend with newline", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"a:1\nserver x:2"}`, "backends"},
		{"backend with $", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"$remote_addr:1"}`, "backends"},
		{"backend with quotes", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"\"a\":1"}`, "backends"},
		{"bad protocol", "PUT", fmt.Sprintf("/v1/streams/sctp/%d", p), `{"backend":"a:1"}`, "protocol"},
		{"bad protocol in body", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"protocol":"udp","backend":"a:1"}`, "protocol"},
		{"bad CIDR", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"a:1","allow":["10.0.0.0/33"]}`, "allow"},
		{"unknown field", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"a:1","proxypass":"x"}`, "proxypass"},
		{"wrong type", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":["a:1"]}`, "backend"},
		{"wrong type bool", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"a:1","proxy_protocol":"yes"}`, "proxy_protocol"},
		{"bad timeout", "PUT", fmt.Sprintf("/v1/streams/tcp/%d", p), `{"backend":"a:1","idle_timeout":"forever"}`, "idle_timeout"},
		{"seed backend with ;", "GET", fmt.Sprintf("/createstream/%d/a:1;", p), "", ""},
		{"seed port 0", "GET", "/createstream/0/a:1", "", ""},
	}
	for _, tc := range cases {
		code, m := d.api(tc.method, tc.path, tc.body)
		if code != 400 {
			t.Errorf("%s: status %d, want 400: %v", tc.name, code, m)
			continue
		}
		if tc.field == "" {
			if m["result"] != "error" {
				t.Errorf("%s: seed error shape %v", tc.name, m)
			}
			continue
		}
		e, _ := m["error"].(map[string]any)
		if e["field"] != tc.field || e["message"] == "" {
			t.Errorf("%s: error %v, want field %q", tc.name, e, tc.field)
		}
	}
	if _, after := d.apiRaw("GET", "/v1/streams", ""); string(after) != string(before) {
		t.Fatalf("bad input changed the store:\n%s\n->\n%s", before, after)
	}
	if err := d.nginxTest(); err != nil {
		t.Fatalf("nginx -t: %v", err)
	}
	mustEcho(t, d.portMin, "A:")
}

// The nginx master dies (kill -9): its orphaned workers are retired
// gracefully, a new master serves every stream, and a connection opened
// before the crash keeps flowing.
func TestKilledNginxIsRestarted(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	live, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMin))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if got, err := roundTrip(live, "before\n"); err != nil || got != "A:before\n" {
		t.Fatalf("before the crash: %q %v", got, err)
	}
	old := d.nginxPID()
	if !d.signalNginx(syscall.SIGKILL) {
		t.Fatal("no nginx master to kill")
	}
	eventually(t, "a new nginx master", 10*time.Second, func() bool {
		pid := d.nginxPID()
		return pid != 0 && pid != old
	})
	eventually(t, "the stream active again", 10*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
		return m["status"].(map[string]any)["state"] == "active"
	})
	if got, err := roundTrip(live, "after\n"); err != nil || got != "A:after\n" {
		t.Fatalf("connection opened before the crash: %q %v", got, err)
	}
	mustEcho(t, d.portMin, "A:")
	// "active" means the new master bound the port: the orphans let go of it.
	if c := d.counters(); c["nginx_starts"] < 1 {
		t.Fatalf("counters do not show the restart: %v", c)
	}
	if !strings.Contains(d.logs.String(), "its workers were told to finish their connections and stop") {
		t.Fatal("the orphaned workers were not retired")
	}
}

// A second daemon on the same data dir fails fast and says why.
func TestSecondDaemonOnSameDataDirFailsFast(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1)
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "DATA_DIR="+d.dataDir, "NGINX_BIN="+nginxBin, "BIND_PORT="+strconv.Itoa(reservePorts(t, 1)),
		fmt.Sprintf("PORT_RANGE=%d-%d", d.portMin, d.portMax), "LOG_FORMAT=json")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the second daemon hung")
	}
	if err == nil || !strings.Contains(string(out), "in use by another stream-conductor") {
		t.Fatalf("second daemon: %v\n%s", err, out)
	}
	if code, _ := d.api("GET", "/readyz", ""); code != 200 {
		t.Fatalf("the first daemon is not ready any more: %d", code)
	}
}
