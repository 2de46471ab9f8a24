package nginxconf

import (
	"strings"
	"testing"
)

func TestParseDiagnostics(t *testing.T) {
	out := strings.Join([]string{
		`nginx: [emerg] host not found in upstream "x.invalid:1" in /data/stream.d/stream-tcp-9001.conf:4`,
		`nginx: configuration file /data/nginx.conf test failed`,
		`2026/11/24 19:12:49 [emerg] 1963#1963: bind() to 127.0.0.1:19002 failed (98: Address already in use)`,
		`2026/11/24 19:12:49 [notice] 1963#1963: try again to bind() after 500ms`,
		`2026/11/24 19:12:52 [notice] 1963#1963: start worker processes`,
		`2026/11/24 19:12:52 [error] 77#77: *12 connect() failed (111: Connection refused) while connecting to upstream`,
	}, "\n")
	ds := ParseDiagnostics(out)
	if len(ds) != 5 {
		t.Fatalf("got %d diagnostics: %+v", len(ds), ds)
	}
	if d := ds[0]; d.Level != "emerg" || d.PID != 0 || d.File != "/data/stream.d/stream-tcp-9001.conf" || d.Line != 4 ||
		d.Message != `host not found in upstream "x.invalid:1"` || !d.IsFatal() {
		t.Errorf("stderr line: %+v", d)
	}
	if d := ds[1]; d.PID != 1963 || d.File != "" {
		t.Errorf("log line: %+v", d)
	}
	if addr, ok := ds[1].BindFailure(); !ok || addr != "127.0.0.1:19002" {
		t.Errorf("BindFailure = %q, %v", addr, ok)
	}
	if _, ok := ds[0].BindFailure(); ok {
		t.Error("host not found read as a bind failure")
	}
	if ds[2].IsFatal() || ds[3].Message != "start worker processes" {
		t.Errorf("notice lines: %+v %+v", ds[2], ds[3])
	}
	if d := ds[4]; d.Level != "error" || !strings.HasPrefix(d.Message, "connect() failed") {
		t.Errorf("connection-numbered line: %+v", d)
	}
}

func TestParseBuildInfo(t *testing.T) {
	debian := "nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0.11\nconfigure arguments: --with-cc-opt='-g -O2' --prefix=/usr/share/nginx --modules-path=/usr/lib/nginx/modules --with-stream=dynamic --with-stream_ssl_module"
	bi := ParseBuildInfo(debian)
	if bi.Version != "1.22.1" || bi.Stream != StreamDynamic || bi.ModulesPath != "/usr/lib/nginx/modules" || bi.User != "nobody" {
		t.Errorf("debian: %+v", bi)
	}
	if bi := ParseBuildInfo("nginx version: nginx/1.27.0\nconfigure arguments: --with-stream --user=nginx --with-http_ssl_module"); bi.Stream != StreamStatic || bi.User != "nginx" {
		t.Errorf("static: %+v", bi)
	}
	if bi := ParseBuildInfo("nginx version: nginx/1.27.0\nconfigure arguments: --with-http_ssl_module"); bi.Stream != StreamMissing {
		t.Errorf("missing: %+v", bi)
	}
}

func TestRenderMain(t *testing.T) {
	got := string(RenderMain(MainOptions{StreamModule: "/m/ngx_stream_module.so", PIDFile: "/d/nginx.pid",
		ErrorLog: "/d/error.log", IncludeDir: `/d/my "dir"/`, WorkerShutdownTimeout: "30s",
		TrafficLog: "unix:/d/my dir/traffic.sock", TrafficLogFormat: "$server_port $status"}))
	for _, want := range []string{
		`load_module "/m/ngx_stream_module.so";`,
		`pid "/d/nginx.pid";`,
		`error_log "/d/error.log" notice;`,
		`worker_shutdown_timeout 30s;`,
		`include "/d/my \"dir\"/*.conf";`,
		`log_format stream_conductor "$server_port $status";`,
		`access_log "syslog:server=unix:/d/my dir/traffic.sock,tag=stream_conductor,nohostname" stream_conductor;`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("main config lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(string(RenderMain(MainOptions{})), "load_module") {
		t.Error("load_module without a module path")
	}
}
