package nginxconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var goldenOptions = RenderOptions{Prefix: "stream-"}

// goldenAddrs are what the golden cases' host names resolve to.
var goldenAddrs = Addrs{
	"db.example":     {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8::10")},
	"single.example": {netip.MustParseAddr("192.0.2.20")},
	"localhost":      {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
}

// mustRender renders s with the golden addresses.
func mustRender(t *testing.T, s stream.Spec) (string, []byte) {
	t.Helper()
	name, body, err := Render(s, goldenAddrs, goldenOptions)
	if err != nil {
		t.Fatal(err)
	}
	return name, body
}

// goldenCases returns the names of testdata/*.json.
func goldenCases(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden cases in testdata: %v", err)
	}
	for i, f := range files {
		files[i] = strings.TrimSuffix(filepath.Base(f), ".json")
	}
	return files
}

func loadCase(t *testing.T, name string) stream.Spec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var s stream.Spec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("%s.json: %v", name, err)
	}
	v, err := Validate(s, Rules{MapHashBucketSize: ManagedMapHashBucketSize})
	if err != nil {
		t.Fatalf("%s.json does not validate: %v", name, err)
	}
	return v
}

func TestRenderGolden(t *testing.T) {
	for _, name := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			s := loadCase(t, name)
			fileName, body := mustRender(t, s)
			if want := "stream-" + string(s.Protocol) + "-" + strconv.Itoa(s.Listen) + ".conf"; fileName != want {
				t.Errorf("file name %q, want %q", fileName, want)
			}
			golden := filepath.Join("testdata", name+".conf")
			if *update {
				if err := os.WriteFile(golden, body, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./nginxconf -update to create it)", err)
			}
			if !bytes.Equal(body, want) {
				t.Errorf("render differs from %s:\n--- got\n%s\n--- want\n%s", golden, body, want)
			}
			if _, body2 := mustRender(t, s); !bytes.Equal(body, body2) {
				t.Error("render is not deterministic")
			}
			if !bytes.HasPrefix(body, []byte(headerMarker+"; edits are overwritten.\n")) {
				t.Errorf("no managed-file header:\n%s", body)
			}
			if strings.Contains(string(body), s.Description) && s.Description != "" {
				t.Error("description was rendered into the config")
			}
		})
	}
}

func TestFileNameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   string
		ok   bool
	}{
		{"stream-tcp-9000.conf", "tcp/9000", true},
		{"stream-udp-53.conf", "udp/53", true},
		{"stream-tcp-09000.conf", "", false},
		{"stream-tcp-9000.conf.bak", "", false},
		{"other-tcp-9000.conf", "", false},
		{"stream-http-80.conf", "", false},
		{"stream-tcp-70000.conf", "", false},
		{".stream-tcp-9000.conf.tmp-123", "", false},
	} {
		id, ok := ParseFileName("stream-", tc.name)
		if ok != tc.ok || ok && id.String() != tc.id {
			t.Errorf("ParseFileName(%q) = %q, %v; want %q, %v", tc.name, id, ok, tc.id, tc.ok)
		}
	}
	if got := FileName("stream-", stream.ID{Protocol: stream.UDP, Port: 53}); got != "stream-udp-53.conf" {
		t.Errorf("FileName = %q", got)
	}
}

// nginxBinary returns the nginx to test against, skipping the test when
// there is none, unless CI is set: there a missing nginx is a failure.
func nginxBinary(t *testing.T) string {
	t.Helper()
	for _, b := range []string{os.Getenv("NGINX_BIN"), "nginx", "/usr/sbin/nginx"} {
		if b == "" {
			continue
		}
		if p, err := exec.LookPath(b); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("nginx is not installed, and CI=true: run scripts/install-deps.sh")
	}
	t.Skip("nginx is not installed")
	return ""
}

// nginxTest runs `nginx -t` on a main configuration that includes the
// stream files in dir.
func nginxTest(t *testing.T, bin, dir string) (string, error) {
	t.Helper()
	v, _ := exec.Command(bin, "-V").CombinedOutput()
	bi := ParseBuildInfo(string(v))
	module := ""
	if bi.Stream == StreamDynamic {
		module = filepath.Join(bi.ModulesPath, "ngx_stream_module.so")
	}
	prefix := t.TempDir()
	conf := filepath.Join(prefix, "nginx.conf")
	// worker_connections as the daemon sizes it for the ports listened on.
	main := RenderMain(MainOptions{StreamModule: module, PIDFile: filepath.Join(prefix, "nginx.pid"), WorkerConnections: 8192,
		ErrorLog: filepath.Join(prefix, "error.log"), IncludeDir: dir})
	if err := os.WriteFile(conf, main, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-q", "-p", prefix, "-c", conf, "-e", filepath.Join(prefix, "error.log")).CombinedOutput()
	return string(out), err
}

func TestGoldenFilesPassNginxTest(t *testing.T) {
	bin := nginxBinary(t)
	for _, name := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			body, err := os.ReadFile(filepath.Join("testdata", name+".conf"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "stream-"+name+".conf"), body, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := nginxTest(t, bin, dir); err != nil {
				t.Fatalf("nginx -t rejects %s.conf: %v\n%s", name, err, out)
			}
		})
	}
}

func TestNginxTestErrorsParseToOurFile(t *testing.T) {
	bin := nginxBinary(t)
	dir := t.TempDir()
	// Our files hold addresses only; a hand-edited file with a name is
	// what makes nginx resolve, and fail.
	name, body := mustRender(t, loadCase(t, "tcp-single"))
	body = bytes.Replace(body, []byte("proxy_pass 127.0.0.1:2000;"), []byte("proxy_pass no-such-host.invalid:2000;"), 1)
	if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := nginxTest(t, bin, dir)
	if err == nil {
		t.Fatal("nginx -t accepted an unresolvable upstream")
	}
	ds := ParseDiagnostics(out)
	if len(ds) == 0 || ds[0].File != filepath.Join(dir, name) || !strings.Contains(ds[0].Message, `host not found in upstream "no-such-host.invalid"`) {
		t.Fatalf("diagnostics %+v from output:\n%s", ds, out)
	}
}

// A name without addresses is not rendered: nginx would resolve it.
func TestRenderRefusesUnresolvedNames(t *testing.T) {
	s := loadCase(t, "named-single")
	_, _, err := Render(s, Addrs{}, goldenOptions)
	var ue *UnresolvedError
	if !errors.As(err, &ue) || ue.Host != "single.example" {
		t.Fatalf("render without addresses: %v", err)
	}
	if got := Names(loadCase(t, "named-upstream")); len(got) != 1 || got[0] != "db.example" {
		t.Fatalf("Names = %v", got)
	}
}
