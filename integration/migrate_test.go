package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// migrateBin runs the real binary's `migrate` with the etcd settings in
// the environment, and returns its output and exit code.
func migrateBin(t *testing.T, etcdURL string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"migrate"}, args...)...)
	cmd.Env = append(os.Environ(), "ETCD_ENDPOINTS="+etcdURL, "ETCD_PREFIX=/fleet")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// A node moves from bbolt to etcd: while its daemon runs, migrate refuses
// its state.db; once it is stopped, the dry run changes nothing in etcd;
// --apply copies its streams; a fresh STATE_STORE=etcd daemon serves them
// (bytes flow through both ports) and shows the migration in its audit
// log; a second --apply reports everything unchanged and moves no
// revision.
func TestMigrateNodeToEtcd(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	a, b := startEcho(t, "a:"), startEcho(t, "b:")
	old := startDaemon(t, 3)
	old.mustPut("tcp", old.portMin, fmt.Sprintf(`{"backends":[%q],"description":"first"}`, a.addr()))
	old.mustPut("tcp", old.portMin+1, fmt.Sprintf(`{"backends":[%q]}`, b.addr()))

	if out, code := migrateBin(t, srv.URL, "--from", old.dataDir, "--to", "etcd", "--apply"); code != 1 || !strings.Contains(out, "in use by a running stream-conductor: stop it first") {
		t.Fatalf("migrate while the daemon runs: exit %d\n%s", code, out)
	}
	old.stop()
	old.stopNginx()
	waitRefused(t, old.portMin)
	waitRefused(t, old.portMin+1)

	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	etcdAt := func() (int64, int64) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, "/fleet/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision, resp.Count
	}
	revBefore, _ := etcdAt()
	out, code := migrateBin(t, srv.URL, "--from", old.dataDir, "--to", "etcd")
	if code != 0 || !strings.Contains(out, "2 to create, 0 to update, 0 to delete, 0 unchanged") {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	if rev, keys := etcdAt(); rev != revBefore || keys != 0 {
		t.Fatalf("the dry run wrote to etcd: revision %d → %d, %d keys under /fleet/", revBefore, rev, keys)
	}
	out, code = migrateBin(t, srv.URL, "--from", old.dataDir, "--to", "etcd", "--apply")
	if code != 0 || !strings.Contains(out, "migrated: 2 created, 0 updated, 0 deleted, 0 unchanged") {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}

	node := newDaemon(t, 3, "STATE_STORE=etcd", "ETCD_ENDPOINTS="+srv.URL, "ETCD_PREFIX=/fleet", "NODE_NAME=edge-1")
	node.portMin, node.portMax = old.portMin, old.portMax
	node.start()
	eventually(t, "the etcd node forwards both migrated streams", 15*time.Second, func() bool {
		got1, err1 := echo(t, old.portMin, "one\n")
		got2, err2 := echo(t, old.portMin+1, "two\n")
		return err1 == nil && err2 == nil && got1 == "a:one\n" && got2 == "b:two\n"
	})
	mustEcho(t, old.portMin, "a:")
	_, m := node.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", old.portMin), "")
	if m["description"] != "first" {
		t.Fatalf("the migrated stream: %v", m)
	}
	_, list := node.api("GET", "/v1/streams", "")
	_, audit := node.api("GET", "/v1/audit?limit=1", "")
	if e, _ := audit["entries"].([]any); len(e) != 1 || e[0].(map[string]any)["route"] != "migrate" {
		t.Fatalf("the node's audit log: %v", audit)
	}

	out, code = migrateBin(t, srv.URL, "--from", old.dataDir, "--to", "etcd", "--apply")
	if code != 0 || !strings.Contains(out, "nothing to change: 0 created, 0 updated, 0 deleted, 2 unchanged") {
		t.Fatalf("second apply: exit %d\n%s", code, out)
	}
	_, again := node.api("GET", "/v1/streams", "")
	if again["revision"] != list["revision"] {
		t.Fatalf("the second apply moved the state: revision %v → %v", list["revision"], again["revision"])
	}
	for i, s := range again["streams"].([]any) {
		if was := list["streams"].([]any)[i].(map[string]any)["revision"]; s.(map[string]any)["revision"] != was {
			t.Fatalf("stream %d: revision %v → %v", i, was, s.(map[string]any)["revision"])
		}
	}
	mustEcho(t, old.portMin+1, "b:")
}
