package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
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
	t.Helper()
	srv, err := etcdtest.Start(t.TempDir())
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("etcd: %v", err)
		}
		t.Skipf("etcd: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
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
