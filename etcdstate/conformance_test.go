package etcdstate

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/desired/conformance"
	"github.com/streamconductor/stream-conductor/internal/etcdtest"
)

// prefixes numbers the tests' key prefixes: each state is alone under its
// own, so the cases run in parallel on the shared server.
var prefixes atomic.Int64

func newPrefix() string { return fmt.Sprintf("/test/%d", prefixes.Add(1)) }

func TestConformance(t *testing.T) {
	needEtcd(t)
	conformance.Run(t, conformance.Impl{
		Open: func(t *testing.T, o conformance.Options) desired.State {
			return openState(t, sharedClient, newPrefix(), Options{AuditRetention: o.AuditRetention})
		},
		Restore: restoreOnFreshEtcd,
	})
}

// The daemon's way: with the local copy's file (and quick probes), the
// state behaves the same.
func TestConformanceWithCache(t *testing.T) {
	needEtcd(t)
	conformance.Run(t, conformance.Impl{
		Open: func(t *testing.T, o conformance.Options) desired.State {
			return openState(t, sharedClient, newPrefix(), Options{AuditRetention: o.AuditRetention,
				CachePath: filepath.Join(t.TempDir(), "cache.db"), CheckInterval: 50 * time.Millisecond})
		},
		Restore: restoreOnFreshEtcd,
	})
}

// restoreOnFreshEtcd restores a backup into an etcd server of its own,
// started for it: the shared server's revision is past the backup's, a
// fresh one's is below it, so the state comes back at the backup's
// revision.
func restoreOnFreshEtcd(t *testing.T, backup []byte) desired.State {
	srv, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const prefix = "/restored"
	if _, err := Restore(ctx, cli, prefix, backup); err != nil {
		t.Fatal(err)
	}
	return openState(t, cli, prefix, Options{})
}
