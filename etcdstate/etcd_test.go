package etcdstate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/internal/etcdtest"
)

// shared is the etcd server of the package's tests (nil: none, skipped),
// sharedClient a client of it; each test works under its own key prefix.
var (
	shared       *etcdtest.Server
	sharedClient *clientv3.Client
	noEtcd       string // why there is no server
)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "etcdstate-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	srv, err := etcdtest.Start(dir)
	if errors.Is(err, etcdtest.ErrNoEtcd) {
		noEtcd = err.Error()
		return m.Run() // every test that needs it fails under CI, else skips
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdstate: etcd is installed but did not start:", err)
		return 1
	}
	defer srv.Stop()
	cli, err := srv.Client()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cli.Close()
	shared, sharedClient = srv, cli
	return m.Run()
}

// needEtcd fails the test under CI and skips it elsewhere when there is no
// etcd server.
func needEtcd(t *testing.T) {
	t.Helper()
	if shared != nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("no etcd server for the tests: %s", noEtcd)
	}
	t.Skipf("no etcd server for the tests: %s (scripts/install-deps.sh installs it)", noEtcd)
}

// newClient is a new client of the shared server, closed at the test's end.
func newClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := shared.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// openState opens a State on cli under prefix, closed at the test's end.
func openState(t *testing.T, cli *clientv3.Client, prefix string, o Options) *State {
	t.Helper()
	st, err := Open(cli, prefix, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// rawGet reads key with the shared client.
func rawGet(t *testing.T, key string) *clientv3.GetResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := sharedClient.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
