package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/etcdstate"
	"github.com/streamconductor/stream-conductor/internal/etcdtest"
	"github.com/streamconductor/stream-conductor/stream"
)

// startEtcd starts an etcd server of the test's own, or fails the test
// under CI and skips it elsewhere when etcd is not installed.
func startEtcd(t *testing.T) *etcdtest.Server {
	return etcdtest.StartForTest(t)
}

// With STATE_STORE=etcd the daemon keeps its streams in etcd: a PUT is
// stored under ETCD_PREFIX with the key's modification revision as its
// ETag and forwards bytes, which the traffic log counts; a stream another
// node writes into etcd is applied too, without a request to this daemon.
func TestEtcdStateStore(t *testing.T) {
	srv := startEtcd(t)
	d := startDaemon(t, 2, "STATE_STORE=etcd", "ETCD_ENDPOINTS="+srv.URL, "ETCD_PREFIX=/fleet", "NODE_NAME=edge-1")
	a, b := startEcho(t, "a:"), startEcho(t, "b:")
	d.mustPut("tcp", d.portMin, fmt.Sprintf(`{"backends":[%q]}`, a.addr()))
	mustEcho(t, d.portMin, "a:")
	eventually(t, "the session counted", 10*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
		tr, _ := m["traffic"].(map[string]any)
		return tr != nil && tr["sessions"] == float64(1)
	})

	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := cli.Get(ctx, "/fleet/streams/tcp/"+strconv.Itoa(d.portMin))
	if err != nil || len(raw.Kvs) != 1 {
		t.Fatalf("the stream's key in etcd: %v, %v", raw, err)
	}
	resp, err := http.Get(d.url("/v1/streams/tcp/" + strconv.Itoa(d.portMin)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := strconv.Quote(strconv.FormatInt(raw.Kvs[0].ModRevision, 10)); resp.Header.Get("ETag") != want {
		t.Fatalf("ETag %s, want the key's mod revision %s", resp.Header.Get("ETag"), want)
	}

	other, err := etcdstate.Open(cli, "/fleet", etcdstate.Options{}) // another node
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	sp := stream.Spec{Protocol: stream.TCP, Listen: d.portMax, Backends: []string{b.addr()}}
	if _, _, err := other.Put(sp, desired.Match{Absent: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the daemon forwards the stream another node wrote", 15*time.Second, func() bool {
		got, err := echo(t, d.portMax, "hello\n")
		return err == nil && got == "b:hello\n"
	})
}

// An etcd with authentication on: the daemon logs in with ETCD_USERNAME
// and the password in ETCD_PASSWORD_FILE; with a wrong password it does
// not start, and says why.
func TestEtcdStateStoreWithPassword(t *testing.T) {
	srv := startEtcd(t)
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := cli.RoleAdd(ctx, "root"); return err },
		func() error { _, err := cli.UserAdd(ctx, "root", "correct-horse-battery"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enable etcd's authentication: %v", err)
		}
	}
	pw := filepath.Join(t.TempDir(), "etcd-password")
	if err := os.WriteFile(pw, []byte("wrong-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newDaemon(t, 1, "STATE_STORE=etcd", "ETCD_ENDPOINTS="+srv.URL, "ETCD_PREFIX=/fleet",
		"ETCD_USERNAME=root", "ETCD_PASSWORD_FILE="+pw)
	if out, err := d.runToExit(); err == nil || !strings.Contains(out, "authentication failed") {
		t.Fatalf("start with a wrong etcd password: %v\n%s", err, out)
	}
	if err := os.WriteFile(pw, []byte("correct-horse-battery\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	be := startEcho(t, "a:")
	d.mustPut("tcp", d.portMin, fmt.Sprintf(`{"backends":[%q]}`, be.addr()))
	mustEcho(t, d.portMin, "a:")
}

// An etcd that serves TLS only and wants a client certificate: the daemon
// connects with ETCD_CACERT, ETCD_CERT and ETCD_KEY; without the client
// certificate it does not start.
func TestEtcdStateStoreOverTLS(t *testing.T) {
	srv, files, err := etcdtest.StartTLS(t.TempDir())
	if err != nil {
		if os.Getenv("CI") == "true" || !errors.Is(err, etcdtest.ErrNoEtcd) {
			t.Fatalf("etcd: %v", err)
		}
		t.Skipf("etcd: %v", err)
	}
	t.Cleanup(srv.Stop)
	base := []string{"STATE_STORE=etcd", "ETCD_ENDPOINTS=" + srv.URL, "ETCD_PREFIX=/fleet", "ETCD_CACERT=" + files.CA}
	d := newDaemon(t, 1, base...)
	if out, err := d.runToExit(); err == nil || !strings.Contains(out, "desired state unavailable") || !strings.Contains(out, "ETCD_CERT") {
		t.Fatalf("start without a client certificate: %v\n%s", err, out)
	}
	d = startDaemon(t, 1, append(base, "ETCD_CERT="+files.Cert, "ETCD_KEY="+files.Key)...)
	be := startEcho(t, "a:")
	d.mustPut("tcp", d.portMin, fmt.Sprintf(`{"backends":[%q]}`, be.addr()))
	mustEcho(t, d.portMin, "a:")
}
