package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// watchedNginx is the fake nginx with managed mode's confirmations and
// main-configuration watch: what the watch tick looks at.
type watchedNginx struct {
	*fakeNginx
	mainDrifted, mainRepaired, signalled bool
}

func (w *watchedNginx) Confirms() bool { return true }

// HeldPorts is what the fake nginx listens on, as a managed master's
// sockets say it.
func (w *watchedNginx) HeldPorts() map[stream.ID]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	held := map[stream.ID]bool{}
	for p, ports := range w.live {
		for port, up := range ports {
			if up {
				held[stream.ID{Protocol: p, Port: port}] = true
			}
		}
	}
	return held
}
func (w *watchedNginx) MainDrifted() bool { return w.mainDrifted }
func (w *watchedNginx) Signalled() bool   { return w.signalled }
func (w *watchedNginx) TakeMainRepaired() bool {
	r := w.mainRepaired
	w.mainRepaired = false
	return r
}

func newWatchedHarness(t *testing.T) (*harness, *watchedNginx) {
	h := newHarness(t)
	w := &watchedNginx{fakeNginx: h.nginx}
	h.rec = New(h.rec.cfg, h.store, w)
	return h, w
}

// Someone reloads nginx on a configuration without our streams: the next
// tick after nginx logged the signal sees the ports closed, counts it, and
// the pass reloads although the fingerprint matches.
func TestListenDriftIsRepaired(t *testing.T) {
	h, w := newWatchedHarness(t)
	h.put(9000, "10.0.0.1:80")
	h.put(9001, "10.0.0.1:80")
	h.mustPass("start")
	w.signalled = true
	if h.rec.lookAgain() {
		t.Fatal("a look found drift where nginx listens on every port")
	}
	h.nginx.mu.Lock()
	h.nginx.live = map[stream.Protocol]map[int]bool{stream.TCP: {}, stream.UDP: {}}
	h.nginx.mu.Unlock()
	if !h.rec.lookAgain() {
		t.Fatal("a look after a signal did not see the closed ports")
	}
	hl := h.rec.NodeStatus()
	if hl.Counters.ListenDrift != 1 || !slices.Equal(hl.NotListening, []string{"tcp/9000", "tcp/9001"}) {
		t.Fatalf("health after the look: %+v", hl)
	}
	h.mustPass("reload")
	if h.rec.lookAgain() {
		t.Fatal("drift still seen after the reload")
	}
	if hl := h.rec.NodeStatus(); len(hl.NotListening) != 0 {
		t.Fatalf("not listening after the repair: %v", hl.NotListening)
	}
	h.mustPass()
}

// Another process listening on the same port at another address (a second
// node of a fleet on the same host) does not hide that our nginx stopped
// listening: what counts is the sockets our master holds.
func TestListenDriftSeesPastOtherListeners(t *testing.T) {
	h, w := newWatchedHarness(t)
	h.put(9000, "10.0.0.1:80")
	h.mustPass("start")
	h.ports.others = map[int]bool{9000: true} // in the host's socket table, not ours
	h.nginx.mu.Lock()
	h.nginx.live = map[stream.Protocol]map[int]bool{stream.TCP: {}, stream.UDP: {}}
	h.nginx.mu.Unlock()
	w.signalled = true
	if !h.rec.lookAgain() {
		t.Fatal("a look took another process's listener on the port for ours")
	}
	if hl := h.rec.NodeStatus(); !slices.Equal(hl.NotListening, []string{"tcp/9000"}) {
		t.Fatalf("not listening: %v", hl.NotListening)
	}
}

// Without a signal in nginx's log, the tick does not read the socket
// table (it costs O(sockets)) until a resync interval has passed.
func TestLookOnlyAfterSignalOrResync(t *testing.T) {
	h, w := newWatchedHarness(t)
	h.put(9000, "10.0.0.1:80")
	h.mustPass("start")
	w.signalled = true
	h.rec.lookAgain() // the first look
	w.signalled = false
	h.nginx.mu.Lock()
	h.nginx.live = map[stream.Protocol]map[int]bool{stream.TCP: {}, stream.UDP: {}}
	h.nginx.mu.Unlock()
	if h.rec.lookAgain() {
		t.Fatal("looked at the socket table without a signal")
	}
	h.rec.lastLook = time.Now().Add(-h.rec.cfg.ResyncInterval)
	if !h.rec.lookAgain() {
		t.Fatal("no look after a resync interval")
	}
}

// The main configuration rewritten under a running nginx makes the pass
// reload, counted, although nothing else changed; so does a first pass
// after a start that finds the files' ports closed.
func TestMainRepairAndFirstLookReload(t *testing.T) {
	h, w := newWatchedHarness(t)
	h.put(9000, "10.0.0.1:80")
	h.mustPass("start")
	w.mainRepaired = true
	h.mustPass("reload")
	if c := h.rec.NodeStatus().Counters; c.MainConfigRepairs != 1 {
		t.Fatalf("counters: %+v", c)
	}
	h.mustPass()

	// A restart while nginx was reloaded without our include.
	h.nginx.mu.Lock()
	h.nginx.live = map[stream.Protocol]map[int]bool{stream.TCP: {}, stream.UDP: {}}
	h.nginx.mu.Unlock()
	h.rec = New(h.rec.cfg, h.store, w)
	h.mustPass("reload")
	h.rec = New(h.rec.cfg, h.store, w)
	h.mustPass()
}

// One file that cannot be replaced fails only its stream; the others are
// written and applied.
func TestUnwritableFileFailsOnlyItsStream(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "10.0.0.1:80")
	h.mustPass("test", "start")
	// A directory in place of the next stream's file: rename onto it fails.
	if err := os.Mkdir(filepath.Join(h.dir, "stream-tcp-9001.conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "stream-tcp-9001.conf", "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := h.put(9001, "10.0.0.1:80")
	good := h.put(9002, "10.0.0.1:80")
	h.mustPass("test", "reload")
	if st := h.rec.Status(bad.ID(), bad.Revision); st.State != stream.Failed || st.Error == "" {
		t.Fatalf("status of the stream with the unwritable file: %+v", st)
	}
	if st := h.rec.Status(good.ID(), good.Revision); st.State != stream.Active {
		t.Fatalf("status of the other stream: %+v", st)
	}
}

// A FIFO named like a stream file is read without blocking, as drift: it
// is replaced by the stream's file.
func TestFIFOIsReplaced(t *testing.T) {
	h := newHarness(t)
	s := h.put(9000, "10.0.0.1:80")
	name := filepath.Join(h.dir, "stream-tcp-9000.conf")
	if err := syscall.Mkfifo(name, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.rec.runPass(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the pass blocked on the FIFO")
	}
	fi, err := os.Lstat(name)
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("%s: %v %v", name, fi, err)
	}
	if st := h.rec.Status(s.ID(), s.Revision); st.State != stream.Active {
		t.Fatalf("status: %+v", st)
	}
}

// Under DRIFT_POLICY=alert drift is left alone, but a FIFO named like our
// file is not: nginx would hang opening it. It is replaced.
func TestFIFOIsReplacedEvenUnderAlert(t *testing.T) {
	h := newHarness(t)
	h.rec.cfg.DriftPolicy = DriftAlert
	h.put(9000, "10.0.0.1:80")
	h.mustPass("test", "start")
	name := filepath.Join(h.dir, "stream-tcp-9000.conf")
	os.Remove(name)
	if err := syscall.Mkfifo(name, 0o644); err != nil {
		t.Fatal(err)
	}
	h.rec.markDirty("stream-tcp-9000.conf")
	done := make(chan error, 1)
	go func() { done <- h.rec.runPass(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		os.Remove(name)
		t.Fatal("the pass blocked on the FIFO")
	}
	if fi, err := os.Lstat(name); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("%s left as %v %v under alert", name, fi, err)
	}
}

// A dry run never reads through a symlink named like our file (it would
// show another file's contents in its diff) nor blocks on a FIFO: such a
// file counts as no current file.
func TestPreviewReadsRegularFilesOnly(t *testing.T) {
	h := newHarness(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("root:x:0:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(h.dir, "stream-tcp-9001.conf")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(h.dir, "stream-tcp-9002.conf"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, port := range []int{9001, 9002} {
		done := make(chan []byte, 1)
		go func() {
			_, _, current, err := h.rec.Preview(stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{"10.0.0.1:80"}})
			if err != nil {
				t.Error(err)
			}
			done <- current
		}()
		select {
		case current := <-done:
			if current != nil {
				t.Fatalf("port %d: the preview read %q", port, current)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("port %d: the preview blocked", port)
		}
	}
}

// The reload that repairs listen drift clears what the look found
// without another look: our own reload is not a signal from someone else,
// so the next tick does not look again, and /readyz must not stay 503
// until the resync.
func TestListenDriftClearedByTheRepairingReload(t *testing.T) {
	h, w := newWatchedHarness(t)
	h.put(9000, "10.0.0.1:80")
	h.mustPass("start")
	h.nginx.mu.Lock()
	h.nginx.live = map[stream.Protocol]map[int]bool{stream.TCP: {}, stream.UDP: {}}
	h.nginx.mu.Unlock()
	w.signalled = true
	if !h.rec.lookAgain() {
		t.Fatal("a look after a signal did not see the closed port")
	}
	w.signalled = false // what follows is our own reload
	h.mustPass("reload")
	if hl := h.rec.NodeStatus(); len(hl.NotListening) != 0 {
		t.Fatalf("not listening after the repairing reload: %v", hl.NotListening)
	}
}
