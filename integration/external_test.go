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
)

// systemNginx is an nginx the test runs itself, as a system nginx whose
// own config includes streams/*.conf inside stream {}. wrapper is an
// NGINX_BIN that points nginx at that config, as /etc/nginx/nginx.conf
// would be.
type systemNginx struct {
	dir, streams, wrapper string
}

func startSystemNginx(t *testing.T) *systemNginx {
	t.Helper()
	sys := t.TempDir()
	streams := filepath.Join(sys, "streams.d")
	if err := os.Mkdir(streams, 0o755); err != nil {
		t.Fatal(err)
	}
	v, _ := exec.Command(nginxBin, "-V").CombinedOutput()
	loadModule := ""
	if strings.Contains(string(v), "--with-stream=dynamic") {
		for _, f := range strings.Fields(string(v)) {
			if dir, ok := strings.CutPrefix(f, "--modules-path="); ok {
				loadModule = fmt.Sprintf("load_module %s/ngx_stream_module.so;\n", dir)
			}
		}
	}
	conf := filepath.Join(sys, "nginx.conf")
	mainConf := loadModule + fmt.Sprintf("pid %s/nginx.pid;\nerror_log %s/error.log notice;\nevents {}\nstream {\n    include %s/*.conf;\n}\n", sys, sys, streams)
	if err := os.WriteFile(conf, []byte(mainConf), 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(sys, "nginx")
	script := fmt.Sprintf("#!/bin/sh\nexec %s -p %s -c %s -e %s/error.log \"$@\"\n", nginxBin, sys, conf, sys)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(wrapper).CombinedOutput(); err != nil {
		t.Fatalf("start the system nginx: %v %s", err, out)
	}
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(sys, "nginx.pid"))
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	})
	return &systemNginx{dir: sys, streams: streams, wrapper: wrapper}
}

func (n *systemNginx) daemon(t *testing.T, ports int, env ...string) *daemon {
	return newDaemon(t, ports, append([]string{"NGINX_MODE=external", "NGINX_BIN=" + n.wrapper, "STREAM_CONFIG_PATH=" + n.streams}, env...)...)
}

// External mode: the daemon only writes files, runs NGINX_BIN -t and
// NGINX_BIN -s reload.
func TestExternalNginxMode(t *testing.T) {
	t.Parallel()
	sn := startSystemNginx(t)
	streams := sn.streams
	// A file that is not ours must survive every pass.
	foreign := filepath.Join(streams, "operator.conf")
	if err := os.WriteFile(foreign, []byte("# the operator's own stream config\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	d := sn.daemon(t, 2)
	d.start()
	be := startEcho(t, "X:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin, "X:")
	if _, err := os.Stat(filepath.Join(streams, fmt.Sprintf("stream-tcp-%d.conf", d.portMin))); err != nil {
		t.Fatalf("stream file not in STREAM_CONFIG_PATH: %v", err)
	}
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), `{"backend":"no-such-host.invalid:1"}`)
	if code != 422 {
		t.Fatalf("unresolvable backend in external mode: %d %v", code, m)
	}
	if code, _ := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), ""); code != 204 {
		t.Fatalf("DELETE: %d", code)
	}
	waitRefused(t, d.portMin)
	if b, err := os.ReadFile(foreign); err != nil || string(b) != "# the operator's own stream config\n" {
		t.Fatalf("the operator's file was touched: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(sn.dir, "nginx.pid")); err != nil {
		t.Fatal("the system nginx is gone")
	}
}
