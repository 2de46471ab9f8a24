package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

type harness struct {
	t     *testing.T
	dir   string
	state string
	store *store.Store
	nginx *fakeNginx
	ports *fakePorts
	rec   *Reconciler
	// resolver answers every name with 192.0.2.1 unless told otherwise.
	resolver *fakeResolver
	policy   Policy
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	tmp := t.TempDir()
	st, err := store.Open(filepath.Join(tmp, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &harness{t: t, dir: filepath.Join(tmp, "stream.d"), state: filepath.Join(tmp, "applied"), store: st}
	if err := os.Mkdir(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h.nginx = newFakeNginx(h.dir)
	h.ports = &fakePorts{nginx: h.nginx, busy: map[int]bool{}}
	h.resolver = newFakeResolver()
	h.rec = h.newReconciler()
	return h
}

func (h *harness) newReconciler() *Reconciler {
	return New(Config{
		Dir:           h.dir,
		Render:        nginxconf.RenderOptions{Prefix: "stream-"},
		StateFile:     h.state,
		VerifyTimeout: 50 * time.Millisecond,
		Ports:         h.ports,
		Resolver:      h.resolver,
		Policy:        h.policy,
		Log:           zerolog.Nop(),
	}, h.store, h.nginx)
}

func (h *harness) put(port int, backend string) stream.Spec {
	h.t.Helper()
	sp, _, err := h.store.Put(stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{backend}}, store.Match{})
	if err != nil {
		h.t.Fatal(err)
	}
	return sp
}

// pass runs one pass and returns the nginx actions it took.
func (h *harness) pass() ([]string, error) {
	h.t.Helper()
	h.nginx.takeActions()
	err := h.rec.runPass(context.Background())
	return h.nginx.takeActions(), err
}

func (h *harness) mustPass(want ...string) {
	h.t.Helper()
	got, err := h.pass()
	if err != nil {
		h.t.Fatalf("pass failed: %v", err)
	}
	if !slices.Equal(got, want) {
		h.t.Fatalf("nginx actions %v, want %v", got, want)
	}
}

func (h *harness) files() map[string]string {
	h.t.Helper()
	entries, err := os.ReadDir(h.dir)
	if err != nil {
		h.t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(h.dir, e.Name()))
		m[e.Name()] = string(b)
	}
	return m
}

func (h *harness) state_(text string) stream.Status {
	id := stream.MustParseID(text)
	sp, err := h.store.Get(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.rec.Status(id, sp.Revision)
}

func TestFirstPassStartsNginxAndSecondDoesNothing(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "a:1")
	h.put(9001, "b:1")
	h.mustPass("test", "start")
	files := h.files()
	if len(files) != 2 || !strings.Contains(files["stream-tcp-9000.conf"], "proxy_pass 192.0.2.1:1;") {
		t.Fatalf("files after first pass: %v", files)
	}
	for _, id := range []string{"tcp/9000", "tcp/9001"} {
		if st := h.state_(id); st.State != stream.Active {
			t.Fatalf("%s is %+v", id, st)
		}
	}
	written := h.rec.NodeStatus().Counters.FilesWritten
	h.mustPass() // in sync: no test, no reload
	if h.rec.NodeStatus().Counters.FilesWritten != written {
		t.Fatal("an in-sync pass wrote files")
	}
	// A change reloads once and touches only its file.
	h.put(9001, "c:1")
	h.mustPass("test", "reload")
	if h.rec.NodeStatus().Counters.FilesWritten != written+1 {
		t.Fatalf("files written %d, want %d", h.rec.NodeStatus().Counters.FilesWritten, written+1)
	}
}

func TestRejectedStreamsAreLeftOutAndOthersApply(t *testing.T) {
	h := newHarness(t)
	h.nginx.rejectHost = "bad.invalid"
	h.put(9000, "good:1")
	h.put(9001, "bad.invalid:1")
	h.put(9002, "bad.invalid:2")
	h.put(9003, "good:3")
	// nginx -t names one file at a time: two failures, then success.
	h.mustPass("test", "test", "test", "start")
	files := h.files()
	if _, ok := files["stream-tcp-9001.conf"]; ok {
		t.Error("a rejected stream's file was left in place")
	}
	if len(files) != 2 {
		t.Errorf("files: %v", files)
	}
	for id, want := range map[string]stream.State{"tcp/9000": stream.Active, "tcp/9001": stream.Failed, "tcp/9002": stream.Failed, "tcp/9003": stream.Active} {
		if st := h.state_(id); st.State != want {
			t.Errorf("%s is %s, want %s", id, st.State, want)
		}
	}
	if st := h.state_("tcp/9001"); !strings.Contains(st.Error, `host not found in upstream "bad.invalid"`) {
		t.Errorf("error %q does not carry nginx's message", st.Error)
	}
	// Quarantine is terminal for the revision: no retry until it changes.
	h.mustPass()
	h.put(9001, "good:9")
	h.mustPass("test", "reload")
	if st := h.state_("tcp/9001"); st.State != stream.Active {
		t.Errorf("changed stream is %s", st.State)
	}
}

func TestRejectedUpdateKeepsTheLastGoodFile(t *testing.T) {
	h := newHarness(t)
	h.nginx.rejectHost = "bad.invalid"
	good := h.put(9000, "good:1")
	h.mustPass("test", "start")
	before := h.files()["stream-tcp-9000.conf"]

	h.put(9000, "bad.invalid:1")
	h.mustPass("test") // rejected; the old file is back, which nginx runs already
	if got := h.files()["stream-tcp-9000.conf"]; got != before {
		t.Fatalf("file after a rejected update:\n%s\nwant the last good one:\n%s", got, before)
	}
	if st := h.state_("tcp/9000"); st.State != stream.Failed {
		t.Fatalf("state %s", st.State)
	}
	// The API rolls the store back; the restored spec is active again
	// without a reload.
	if _, _, err := h.store.Put(good, store.Match{}); err != nil {
		t.Fatal(err)
	}
	h.mustPass()
	if st := h.state_("tcp/9000"); st.State != stream.Active {
		t.Fatalf("after rollback: %s", st.State)
	}
}

func TestFailureInForeignFileKeepsLastGoodFiles(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "a:1")
	h.mustPass("test", "start")
	before := h.files()
	h.nginx.foreign = `unknown directive "oops"`
	h.put(9001, "b:1")
	got, err := h.pass()
	if err == nil || !slices.Equal(got, []string{"test"}) {
		t.Fatalf("pass = %v, %v; want an error after one test", got, err)
	}
	if after := h.files(); len(after) != len(before) || after["stream-tcp-9000.conf"] != before["stream-tcp-9000.conf"] {
		t.Fatalf("files changed though nginx was not reloaded: %v", after)
	}
	if he := h.rec.NodeStatus(); !strings.Contains(he.LastError, "oops") {
		t.Fatalf("health does not say why: %+v", he)
	}
	if st := h.state_("tcp/9001"); st.State != stream.Pending {
		t.Fatalf("tcp/9001 is %s, want pending", st.State)
	}
	// While the foreign file is broken, retries test the last good files
	// and write nothing.
	got, err = h.pass()
	if err == nil || !slices.Equal(got, []string{"test"}) {
		t.Fatalf("retry while still broken = %v, %v", got, err)
	}
	if after := h.files(); len(after) != len(before) {
		t.Fatalf("a retry wrote files while nginx -t still fails: %v", after)
	}
	h.nginx.foreign = ""
	h.mustPass("test", "test", "reload") // the last good files pass, then the change
	if he := h.rec.NodeStatus(); he.LastError != "" {
		t.Fatalf("error not cleared: %+v", he)
	}
}

func TestPortHeldByAnotherProcessFailsOnlyThatStream(t *testing.T) {
	h := newHarness(t)
	h.ports.busy[9001] = true
	h.put(9000, "a:1")
	h.put(9001, "b:1")
	h.mustPass("test", "start")
	if st := h.state_("tcp/9001"); st.State != stream.Failed || !strings.Contains(st.Error, "Address already in use") {
		t.Fatalf("tcp/9001: %+v", st)
	}
	if st := h.state_("tcp/9000"); st.State != stream.Active {
		t.Fatalf("tcp/9000: %+v", st)
	}
}

func TestReloadBindFailureIsAttributedAndRetried(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "a:1")
	h.mustPass("test", "start")
	h.nginx.bindFails["0.0.0.0:9001"] = true // taken between the probe and the reload
	h.put(9001, "b:1")
	h.put(9002, "c:1")
	h.mustPass("test", "reload", "test", "reload")
	if st := h.state_("tcp/9001"); st.State != stream.Failed || !strings.Contains(st.Error, "bind() to 0.0.0.0:9001") {
		t.Fatalf("tcp/9001: %+v", st)
	}
	if st := h.state_("tcp/9002"); st.State != stream.Active {
		t.Fatalf("tcp/9002: %+v", st)
	}
}

// nginx names the whole address it could not bind: a stream on the same
// port at another address (here udp/9000 on 127.0.0.2 beside tcp/9000 on
// 127.0.0.1) is not blamed for it.
func TestBindFailureBlamesTheStreamOnThatAddressOnly(t *testing.T) {
	h := newHarness(t)
	for _, sp := range []stream.Spec{
		{Protocol: stream.TCP, Listen: 9000, Bind: "127.0.0.1", Backends: []string{"a:1"}},
		{Protocol: stream.UDP, Listen: 9000, Bind: "127.0.0.2", Backends: []string{"b:1"}},
	} {
		if _, _, err := h.store.Put(sp, store.Match{}); err != nil {
			t.Fatal(err)
		}
	}
	h.nginx.bindFails["127.0.0.2:9000"] = true
	h.mustPass("test", "start", "test", "start")
	if st := h.state_("udp/9000"); st.State != stream.Failed || !strings.Contains(st.Error, "bind() to 127.0.0.2:9000") {
		t.Fatalf("udp/9000: %+v", st)
	}
	if st := h.state_("tcp/9000"); st.State != stream.Active {
		t.Fatalf("tcp/9000 was blamed for udp/9000's address: %+v", st)
	}
}

func TestPortThatNeverOpensIsNotCalledActive(t *testing.T) {
	h := newHarness(t)
	h.nginx.deaf[9001] = true
	h.put(9000, "a:1")
	h.put(9001, "b:1")
	h.mustPass("test", "start", "test", "reload")
	if st := h.state_("tcp/9001"); st.State != stream.Failed || !strings.Contains(st.Error, "did not open the port") {
		t.Fatalf("tcp/9001: %+v", st)
	}
}

func TestDriftIsRepairedAndForeignFilesUntouched(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "a:1")
	h.mustPass("test", "start")
	want := h.files()["stream-tcp-9000.conf"]
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(h.dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("stream-tcp-9000.conf", "server { listen 9000; proxy_pass evil:1; }\n")
	write("stream-tcp-9009.conf", "# an orphan with our prefix\n")
	write("operator.conf", "# hand-written, not ours\n")
	write(".stream-tcp-9000.conf.tmp-123", "half-written by a crash")
	h.mustPass("test", "reload")
	files := h.files()
	if files["stream-tcp-9000.conf"] != want {
		t.Error("edited file not restored")
	}
	if _, ok := files["stream-tcp-9009.conf"]; ok {
		t.Error("orphan with our prefix not removed")
	}
	if files["operator.conf"] != "# hand-written, not ours\n" {
		t.Error("a file without our prefix was touched")
	}
	if _, ok := files[".stream-tcp-9000.conf.tmp-123"]; ok {
		t.Error("stale temporary file left behind")
	}
}

func TestRestartWithRunningNginxReloadsNothing(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "a:1")
	h.put(9001, "b:1")
	h.mustPass("test", "start")
	h.rec = h.newReconciler() // the daemon restarts; nginx keeps running
	h.mustPass()
	if c := h.rec.NodeStatus().Counters; c.FilesWritten != 0 || c.FilesRemoved != 0 {
		t.Fatalf("restart touched files: %+v", c)
	}
	if st := h.state_("tcp/9000"); st.State != stream.Active {
		t.Fatalf("after restart tcp/9000 is %s", st.State)
	}
	// A lost state file means we cannot know what nginx runs: reload once.
	os.Remove(h.state)
	h.rec = h.newReconciler()
	h.mustPass("test", "reload")
}

func TestRunAppliesWritesAndReleasesWaiters(t *testing.T) {
	h := newHarness(t)
	ctx := h.run(t)

	var last stream.Spec
	for port := 9000; port < 9050; port++ {
		last = h.put(port, "a:1")
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := h.rec.WaitApplied(wctx, last.Revision); err != nil {
		t.Fatalf("WaitApplied: %v", err)
	}
	for port := 9000; port < 9050; port++ {
		if st := h.state_(stream.ID{Protocol: stream.TCP, Port: port}.String()); st.State != stream.Active {
			t.Fatalf("port %d: %s", port, st.State)
		}
	}
	c := h.rec.NodeStatus().Counters
	if c.Reloads+c.Starts > 25 {
		t.Errorf("50 writes cost %d reloads; triggers are not coalesced", c.Reloads+c.Starts)
	}
	t.Logf("50 writes: %d passes, %d starts/reloads", c.Passes, c.Reloads+c.Starts)
}

// run runs the reconciler's loop until the test ends, and returns its
// context.
func (h *harness) run(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.rec.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ctx
}

// A file of ours on disk says nothing of the port after a restart: while
// we were down it was edited to listen elsewhere, nginx reloaded it, and
// another process took the stream's port. The first pass trusts the ports
// the master holds, so it probes this one, fails that stream alone and
// applies the rest, instead of failing every reload on the bind.
func TestRestartProbesAPortTheMasterNoLongerHolds(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "a:1")
	h.put(9001, "b:1")
	h.mustPass("test", "start")
	h.nginx.held = map[stream.ID]bool{stream.MustParseID("tcp/9001"): true} // 9000 no longer
	h.ports.busy[9000] = true
	h.nginx.bindFails["0.0.0.0:9000"] = true
	h.rec = h.newReconciler() // the daemon restarts
	h.put(9002, "c:1")        // and has something to apply
	if _, err := h.pass(); err != nil {
		t.Fatalf("first pass after the restart failed: %v", err)
	}
	if st := h.state_("tcp/9000"); st.State != stream.Failed || !strings.Contains(st.Error, "Address already in use") {
		t.Fatalf("tcp/9000: %+v", st)
	}
	for _, id := range []string{"tcp/9001", "tcp/9002"} {
		if st := h.state_(id); st.State != stream.Active {
			t.Fatalf("%s is %s", id, st.State)
		}
	}
}
