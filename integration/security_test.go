package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Without a token the API refuses to listen beyond loopback, unless the
// operator insists, and then says so loudly.
func TestNoTokenMeansLoopbackOnly(t *testing.T) {
	t.Parallel()
	port := reservePorts(t, 2)
	run := func(extra ...string) (string, error) {
		cmd := exec.Command(binary)
		cmd.Env = append(os.Environ(), "DATA_DIR="+t.TempDir(), "NGINX_BIN="+nginxBin, "BIND_ADDRESS=0.0.0.0",
			"BIND_PORT="+strconv.Itoa(port), fmt.Sprintf("PORT_RANGE=%d-%d", port+1, port+1), "LOG_FORMAT=json")
		cmd.Env = append(cmd.Env, extra...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run()
	if err == nil || !strings.Contains(out, "API_TOKEN_FILE") || !strings.Contains(out, "not loopback") {
		t.Fatalf("started on 0.0.0.0 without a token: %v\n%s", err, out)
	}

	d := newDaemon(t, 1, "BIND_ADDRESS=0.0.0.0", "ALLOW_INSECURE_REMOTE=true")
	d.start()
	if !strings.Contains(d.logs.String(), "INSECURE") {
		t.Fatal("no loud warning for an insecure remote API")
	}
}

// The token file is re-read on SIGHUP: the old token stops working, the
// new one works, without a restart.
func TestTokenFileReloadedOnSIGHUP(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("first-token-0123456789abcdef\n"), 0o600)
	d := newDaemon(t, 1, "API_TOKEN_FILE="+file)
	d.client.Transport = &bearer{token: "first-token-0123456789abcdef"}
	d.start()
	if code, _ := d.api("GET", "/v1/streams", ""); code != 200 {
		t.Fatalf("first token: %d", code)
	}
	os.WriteFile(file, []byte("second-token-0123456789abcdef\n"), 0o600)
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "the first token refused after SIGHUP", 10*time.Second, func() bool {
		code, _ := d.api("GET", "/v1/streams", "")
		return code == 401
	})
	d.client.Transport = &bearer{token: "second-token-0123456789abcdef"}
	if code, _ := d.api("GET", "/v1/streams", ""); code != 200 {
		t.Fatalf("second token: %d", code)
	}
	if code, _ := d.apiRaw("GET", "/healthz", ""); code != 200 {
		t.Fatal("/healthz must need no token")
	}
}

// BACKEND_ALLOW limits where streams may point, with a 403 naming the rule.
func TestBackendAllow(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2, "BACKEND_ALLOW=127.0.0.0/8")
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin, "A:")
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), `{"backend":"10.1.2.3:22"}`)
	e, _ := m["error"].(map[string]any)
	if code != 403 || e["code"] != "forbidden" || !strings.Contains(fmt.Sprint(e["message"]), "BACKEND_ALLOW") {
		t.Fatalf("backend outside BACKEND_ALLOW: %d %v", code, m)
	}
	_, audit := d.api("GET", "/v1/audit", "")
	entries := audit["entries"].([]any)
	if len(entries) != 2 || entries[0].(map[string]any)["result"] != "forbidden" || entries[1].(map[string]any)["status"] != float64(201) {
		t.Fatalf("audit log: %v", audit)
	}
}
