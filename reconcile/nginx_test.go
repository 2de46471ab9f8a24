package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/streamconductor/stream-conductor/nginx"
)

// unsupervisedNginx is the fake as an operator's nginx (external mode):
// never started nor recovered by us, and known to be down only when a
// reload found no master.
type unsupervisedNginx struct {
	*fakeNginx
	down bool // the system nginx is stopped
	seen bool // the last reload found no master
}

func (u *unsupervisedNginx) Supervises() bool { return false }
func (u *unsupervisedNginx) Running() bool    { return !u.seen }

func (u *unsupervisedNginx) Reload(ctx context.Context, retire bool) error {
	u.seen = u.down
	if u.down {
		u.record("reload")
		return &nginx.Error{Op: "reload", Output: `nginx: [error] invalid PID number "" in "/run/nginx.pid"`}
	}
	return u.fakeNginx.Reload(ctx, retire)
}

// failedPass runs a pass that must fail after the actions want.
func (h *harness) failedPass(want ...string) {
	h.t.Helper()
	got, err := h.pass()
	if err == nil || !slices.Equal(got, want) {
		h.t.Fatalf("nginx actions %v (%v), want %v and a failure", got, err, want)
	}
}

// An nginx we do not supervise is never started; once a reload found it
// down, every pass reloads it, although the files on disk are those it
// last applied, until one reaches it again: that is the only way to learn
// it is back.
func TestUnsupervisedNginxDownIsReloadedUntilBack(t *testing.T) {
	h := newHarness(t)
	u := &unsupervisedNginx{fakeNginx: h.nginx}
	h.nginx.running = true // the operator's nginx runs already
	h.rec = New(h.rec.cfg, h.store, u)
	h.put(9000, "10.0.0.1:80")
	h.mustPass("test", "reload")
	h.mustPass()
	u.down = true
	// A file removed by hand: the pass writes it again and reloads.
	if err := os.Remove(filepath.Join(h.dir, "stream-tcp-9000.conf")); err != nil {
		t.Fatal(err)
	}
	h.failedPass("test", "reload")
	if h.rec.NodeStatus().NginxRunning {
		t.Fatal("nginx reported running after a reload found no master")
	}
	h.failedPass("test", "reload")
	u.down = false
	h.mustPass("test", "reload")
	if !h.rec.NodeStatus().NginxRunning {
		t.Fatal("nginx reported not running after a reload reached it")
	}
	h.mustPass()
}
