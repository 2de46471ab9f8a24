package reconcile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

func (h *harness) write(name, body string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, name), []byte(body), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func TestDriftIsCountedOnceAndRepaired(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "a:1")
	h.put(9001, "b:1")
	h.mustPass("test", "start")
	want := h.files()
	h.write("stream-tcp-9000.conf", "# edited by hand\n")
	os.Remove(filepath.Join(h.dir, "stream-tcp-9001.conf"))
	h.write("stream-udp-9002.conf", "# added by hand\n")
	h.mustPass("test", "reload")
	if got := h.files(); len(got) != 2 || got["stream-tcp-9000.conf"] != want["stream-tcp-9000.conf"] || got["stream-tcp-9001.conf"] != want["stream-tcp-9001.conf"] {
		t.Fatalf("not repaired: %v", got)
	}
	c := h.rec.NodeStatus().Counters
	if c.DriftDetected != 3 || c.DriftRepairs != 1 {
		t.Fatalf("drift counters %+v, want 3 files in 1 repair", c)
	}
	// Our own writes are not drift.
	h.put(9003, "c:1")
	h.mustPass("test", "reload")
	h.mustPass()
	if c := h.rec.NodeStatus().Counters; c.DriftDetected != 3 {
		t.Fatalf("our own writes counted as drift: %+v", c)
	}
}

func TestDriftAlertLeavesFilesAndDoesNotReload(t *testing.T) {
	h := newHarness(t)
	h.rec.cfg.DriftPolicy = DriftAlert
	h.put(9000, "a:1")
	h.put(9001, "b:1")
	h.mustPass("test", "start")
	h.write("stream-tcp-9000.conf", "# edited by hand\n")
	os.Remove(filepath.Join(h.dir, "stream-tcp-9001.conf"))
	h.mustPass() // drift alone: no write, no test, no reload
	files := h.files()
	if files["stream-tcp-9000.conf"] != "# edited by hand\n" {
		t.Fatal("alert mode rewrote a drifted file")
	}
	if _, ok := files["stream-tcp-9001.conf"]; ok {
		t.Fatal("alert mode recreated a removed file")
	}
	if d := h.rec.NodeStatus().Drifted; len(d) != 2 {
		t.Fatalf("health shows drifted %v", d)
	}
	h.mustPass() // still held, still nothing to do
	if c := h.rec.NodeStatus().Counters; c.DriftDetected != 2 || c.DriftRepairs != 0 {
		t.Fatalf("counters %+v", c)
	}
	// Writing the stream through the API takes it back.
	h.put(9000, "a:2")
	h.mustPass("test", "reload")
	if got := h.files()["stream-tcp-9000.conf"]; !strings.Contains(got, "proxy_pass 192.0.2.1:2;") {
		t.Fatalf("API write did not take the file back: %q", got)
	}
	if d := h.rec.NodeStatus().Drifted; len(d) != 1 || d[0] != "stream-tcp-9001.conf" {
		t.Fatalf("drifted after the write: %v", d)
	}
}

func TestDriftRepairsAreRateLimited(t *testing.T) {
	h := newHarness(t)
	now := time.Unix(1000, 0)
	h.rec.repairs = newLimiter(DefaultRepairRate, func() time.Time { return now })
	h.put(9000, "a:1")
	h.mustPass("test", "start")
	for i := 0; i < DefaultRepairRate.Burst; i++ {
		h.write("stream-tcp-9000.conf", "# fight\n")
		h.mustPass("test", "reload")
	}
	h.write("stream-tcp-9000.conf", "# fight on\n")
	h.mustPass() // over the limit: held, no reload
	if h.files()["stream-tcp-9000.conf"] != "# fight on\n" {
		t.Fatal("repaired beyond the rate limit")
	}
	if d := h.rec.NodeStatus().Drifted; len(d) != 1 {
		t.Fatalf("a rate-limited file is not shown as drifted: %v", d)
	}
	now = now.Add(DefaultRepairRate.every())
	h.mustPass("test", "reload")
	if got := h.files()["stream-tcp-9000.conf"]; !strings.Contains(got, "proxy_pass 192.0.2.1:1;") {
		t.Fatalf("not repaired once a token came back: %q", got)
	}
	if st := h.state_("tcp/9000"); st.State != stream.Active {
		t.Fatalf("state %s", st.State)
	}
}

func TestRemovedDirectoryIsRecreated(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "a:1")
	h.mustPass("test", "start")
	if err := os.RemoveAll(h.dir); err != nil {
		t.Fatal(err)
	}
	h.mustPass("test", "reload")
	if _, ok := h.files()["stream-tcp-9000.conf"]; !ok {
		t.Fatal("file not restored in the recreated directory")
	}
}

// A file edited while the pass applies it makes nginx fail on someone
// else's content: no stream is blamed, and the next pass repairs it.
func TestEditDuringPassBlamesNoStream(t *testing.T) {
	h := newHarness(t)
	h.nginx.rejectHost = "bad.invalid"
	h.put(9000, "a:1")
	h.mustPass("test", "start")
	h.put(9000, "b:1")
	h.nginx.duringTest = func() {
		h.nginx.duringTest = nil
		h.write("stream-tcp-9000.conf", "server { proxy_pass bad.invalid:1; }\n")
	}
	if _, err := h.pass(); err == nil {
		t.Fatal("the pass succeeded though nginx tested someone else's file")
	}
	if st := h.state_("tcp/9000"); st.State == stream.Failed {
		t.Fatalf("the stream was blamed: %+v", st)
	}
	h.mustPass("test", "reload")
	if st := h.state_("tcp/9000"); st.State != stream.Active {
		t.Fatalf("after the repair: %+v", st)
	}
}
