package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// driftFixture is a daemon with one active stream to backend A and a spare
// backend B.
type driftFixture struct {
	d    *daemon
	a, b *echoServer
	dir  string
	file string
	want []byte
}

func newDriftFixture(t *testing.T, env ...string) *driftFixture {
	t.Helper()
	d := startDaemon(t, 2, env...)
	f := &driftFixture{d: d, a: startEcho(t, "A:"), b: startEcho(t, "B:"), dir: filepath.Join(d.dataDir, "stream.d")}
	d.mustPut("tcp", d.portMin, `{"backend":"`+f.a.addr()+`"}`)
	f.file = filepath.Join(f.dir, fmt.Sprintf("stream-tcp-%d.conf", d.portMin))
	var err error
	if f.want, err = os.ReadFile(f.file); err != nil {
		t.Fatal(err)
	}
	return f
}

// waitRepaired waits until the file is back, nginx forwards to A again,
// and the repair is logged and counted.
func (f *driftFixture) waitRepaired(t *testing.T) {
	t.Helper()
	eventually(t, "the file restored from the store", 5*time.Second, func() bool {
		b, err := os.ReadFile(f.file)
		return err == nil && string(b) == string(f.want)
	})
	eventually(t, "traffic to backend A again", 5*time.Second, func() bool {
		got, err := echo(t, f.d.portMin, "x\n")
		return err == nil && got == "A:x\n"
	})
	eventually(t, "the repair counted", 5*time.Second, func() bool {
		return f.d.counters()["drift_repairs"] >= 1
	})
	if !strings.Contains(f.d.logs.String(), "repairing them from the store") {
		t.Fatal("no log line for the repair")
	}
}

// hup makes nginx load whatever is on disk, as an operator's reload would.
func (f *driftFixture) hup(t *testing.T) {
	t.Helper()
	if !f.d.signalNginx(syscall.SIGHUP) {
		t.Fatal("no nginx master to reload")
	}
}

func TestDriftHandEditIsRepaired(t *testing.T) {
	t.Parallel()
	f := newDriftFixture(t)
	edited := strings.Replace(string(f.want), f.a.addr(), f.b.addr(), 1)
	if err := os.WriteFile(f.file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	f.hup(t) // even if someone reloads nginx with the edit, it is undone
	f.waitRepaired(t)
}

func TestDriftDeletedFileIsRepaired(t *testing.T) {
	t.Parallel()
	f := newDriftFixture(t)
	if err := os.Remove(f.file); err != nil {
		t.Fatal(err)
	}
	f.hup(t)
	f.waitRepaired(t)
}

func TestDriftAddedFileWithOurPrefixIsRemoved(t *testing.T) {
	t.Parallel()
	f := newDriftFixture(t)
	extra := filepath.Join(f.dir, fmt.Sprintf("stream-tcp-%d.conf", f.d.portMax))
	rogue := fmt.Sprintf("server { listen 127.0.0.1:%d; proxy_pass %s; }\n", f.d.portMax, f.b.addr())
	if err := os.WriteFile(extra, []byte(rogue), 0o644); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(f.dir, "operator-notes.conf.disabled")
	if err := os.WriteFile(foreign, []byte("not ours\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rogue file removed", 5*time.Second, func() bool {
		_, err := os.Stat(extra)
		return os.IsNotExist(err)
	})
	waitRefused(t, f.d.portMax)
	f.waitRepaired(t)
	if b, err := os.ReadFile(foreign); err != nil || string(b) != "not ours\n" {
		t.Fatal("a file without our prefix was touched")
	}
}

func TestDriftRenamedFileIsRepaired(t *testing.T) {
	t.Parallel()
	f := newDriftFixture(t)
	renamed := filepath.Join(f.dir, fmt.Sprintf("stream-tcp-%d.conf", f.d.portMax))
	if err := os.Rename(f.file, renamed); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the renamed copy removed", 5*time.Second, func() bool {
		_, err := os.Stat(renamed)
		return os.IsNotExist(err)
	})
	f.waitRepaired(t)
}

func TestDriftDirectoryRemovedAndRecreated(t *testing.T) {
	t.Parallel()
	f := newDriftFixture(t)
	if err := os.RemoveAll(f.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(f.dir, 0o755); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	f.hup(t)
	f.waitRepaired(t)
}

func TestDriftAlertPolicyOnlyReports(t *testing.T) {
	t.Parallel()
	f := newDriftFixture(t, "DRIFT_POLICY=alert")
	edited := strings.Replace(string(f.want), f.a.addr(), f.b.addr(), 1)
	if err := os.WriteFile(f.file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the drift reported in /v1/status", 5*time.Second, func() bool {
		_, m := f.d.api("GET", "/v1/status", "")
		drifted, _ := m["reconciler"].(map[string]any)["drifted"].([]any)
		return len(drifted) == 1
	})
	if b, _ := os.ReadFile(f.file); string(b) != edited {
		t.Fatal("alert mode changed the drifted file")
	}
	if c := f.d.counters(); c["drift_repairs"] != 0 || c["drift_detected"] != 1 {
		t.Fatalf("counters %v", c)
	}
	// Writing the stream through the API takes the file back.
	f.d.mustPut("tcp", f.d.portMin, `{"backend":"`+f.a.addr()+`","description":"taken back"}`)
	mustEcho(t, f.d.portMin, "A:")
}
