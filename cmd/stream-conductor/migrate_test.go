package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/etcdstate"
	"github.com/streamconductor/stream-conductor/internal/etcdtest"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// startTestEtcd starts an etcd of the test's own (flags after the
// defaults), or fails under CI and skips elsewhere when etcd is missing.
func startTestEtcd(t *testing.T, flags ...string) *etcdtest.Server {
	return etcdtest.StartForTest(t, flags...)
}

// openEtcdTest opens the state under /fleet of srv, as a node would.
func openEtcdTest(t *testing.T, srv *etcdtest.Server) *etcdstate.State {
	t.Helper()
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	st, err := etcdstate.Open(cli, "/fleet", etcdstate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// etcdRevision is the cluster's revision: any write to etcd raises it.
func etcdRevision(t *testing.T, srv *etcdtest.Server) int64 {
	t.Helper()
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// bboltWith writes specs into a new state.db and closes it.
func bboltWith(t *testing.T, specs ...stream.Spec) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range specs {
		if _, _, err := st.Put(sp, desired.Match{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func tcp(port int, backend string) stream.Spec {
	return stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{backend}}
}

// migrateCmd runs `stream-conductor migrate args...` against srv's /fleet.
func migrateCmd(srv *etcdtest.Server, args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	e := map[string]string{"ETCD_PREFIX": "/fleet"}
	if srv != nil {
		e["ETCD_ENDPOINTS"] = srv.URL
	}
	code := runMigrate(args, env(e), &out, &errOut)
	return out.String(), errOut.String(), code
}

// byID is the streams of a list by id, for comparisons.
func byID(list []stream.Spec) map[stream.ID]stream.Spec {
	m := map[stream.ID]stream.Spec{}
	for _, sp := range list {
		m[sp.ID()] = sp
	}
	return m
}

// bbolt → etcd: the dry run shows the plan (with what only etcd has) and
// writes nothing, to etcd or to the file; --apply writes it in one import
// and appends an audit record; a second --apply reports everything
// unchanged and leaves every revision as it was; --prune deletes what the
// source does not have.
func TestMigrateBboltToEtcd(t *testing.T) {
	srv := startTestEtcd(t)
	fleet := openEtcdTest(t, srv)
	for _, sp := range []stream.Spec{tcp(9001, "old:1"), tcp(9005, "only-in-etcd:1")} {
		if _, _, err := fleet.Put(sp, desired.Match{}); err != nil {
			t.Fatal(err)
		}
	}
	src := []stream.Spec{tcp(9000, "a:1"), tcp(9001, "b:1"), {Protocol: stream.UDP, Listen: 53, Backends: []string{"dns:53"}, IdleTimeout: "30s"}}
	path := bboltWith(t, src...)
	fileBefore, _ := os.ReadFile(path)
	revBefore := etcdRevision(t, srv)

	out, errOut, code := migrateCmd(srv, "--from", path, "--to", "etcd")
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"from bbolt " + path + ": 3 streams", "2 streams",
		"dry run, nothing changed (--apply writes it): 2 to create, 1 to update, 0 to delete, 0 unchanged",
		"  + tcp/9000\n", "  + udp/53\n", "  ~ tcp/9001\n", "  ! tcp/9005 is only in the destination: kept (--prune deletes it)"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	if rev := etcdRevision(t, srv); rev != revBefore {
		t.Fatalf("the dry run wrote to etcd: revision %d → %d", revBefore, rev)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(fileBefore, after) {
		t.Fatal("the dry run changed the source file")
	}

	out, errOut, code = migrateCmd(srv, "--from", path, "--to", "etcd", "--apply")
	if code != 0 || !strings.Contains(out, "migrated: 2 created, 1 updated, 0 deleted, 0 unchanged") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(fileBefore, after) {
		t.Fatal("--apply changed the source file")
	}
	list, stateRev := fleet.List()
	got := byID(list)
	for _, sp := range src {
		if g, ok := got[sp.ID()]; !ok || !g.SameDesired(sp) {
			t.Errorf("etcd has %s as %+v, want %+v", sp.ID(), g, sp)
		}
	}
	if _, ok := got[stream.MustParseID("tcp/9005")]; !ok || len(got) != 4 {
		t.Fatalf("etcd holds %d streams, want the 3 migrated and tcp/9005 kept", len(got))
	}
	recs, err := fleet.Audit(0, 1)
	if err != nil || len(recs) != 1 || recs[0].Operation != OpMigrate || recs[0].Result != "ok" ||
		recs[0].Stream != "migrate from "+path+": 2 created, 1 updated, 0 deleted, 0 unchanged" ||
		recs[0].Request != "migrate --from "+path+" --to etcd --apply" || !strings.HasPrefix(recs[0].Actor, "local:") {
		t.Fatalf("audit record: %+v, %v", recs, err)
	}

	out, errOut, code = migrateCmd(srv, "--from", path, "--to", "etcd", "--apply")
	if code != 0 || !strings.Contains(out, "nothing to change: 0 created, 0 updated, 0 deleted, 3 unchanged") {
		t.Fatalf("second apply: exit %d\n%s%s", code, out, errOut)
	}
	list2, stateRev2 := fleet.List()
	if stateRev2 != stateRev {
		t.Fatalf("the second apply moved the state's revision %d → %d", stateRev, stateRev2)
	}
	for _, sp := range list2 {
		if got[sp.ID()].Revision != sp.Revision {
			t.Errorf("%s: revision %d → %d", sp.ID(), got[sp.ID()].Revision, sp.Revision)
		}
	}

	out, errOut, code = migrateCmd(srv, "--from", path, "--to", "etcd", "--apply", "--prune")
	if code != 0 || !strings.Contains(out, "migrated: 0 created, 0 updated, 1 deleted, 3 unchanged") || !strings.Contains(out, "  - tcp/9005\n") {
		t.Fatalf("apply --prune: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := fleet.Get(stream.MustParseID("tcp/9005")); !errors.Is(err, desired.ErrNotFound) {
		t.Fatalf("tcp/9005 after --prune: %v", err)
	}
}

// etcd → bbolt: the dry run does not create the file; --apply creates it
// with etcd's streams and the audit record; the file then reads back the
// same streams.
func TestMigrateEtcdToBbolt(t *testing.T) {
	srv := startTestEtcd(t)
	fleet := openEtcdTest(t, srv)
	src := []stream.Spec{tcp(9000, "a:1"), {Protocol: stream.TCP, Listen: 9002, Backends: []string{"b:1", "c:1"}, Balance: "least_conn", Description: "two"}}
	for _, sp := range src {
		if _, _, err := fleet.Put(sp, desired.Match{}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	out, errOut, code := migrateCmd(srv, "--from", "etcd", "--to", path)
	if code != 0 || !strings.Contains(out, "(does not exist yet): 0 streams") || !strings.Contains(out, "2 to create") {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the dry run created %s: %v", path, err)
	}
	// A data dir stands for its state.db.
	out, errOut, code = migrateCmd(srv, "--from", "etcd", "--to", dir, "--apply")
	if code != 0 || !strings.Contains(out, "migrated: 2 created, 0 updated, 0 deleted, 0 unchanged") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	specs, _, err := store.Read(path, 0)
	if err != nil || len(specs) != 2 {
		t.Fatalf("the new file: %d streams, %v", len(specs), err)
	}
	got := byID(specs)
	for _, sp := range src {
		if !got[sp.ID()].SameDesired(sp) {
			t.Errorf("%s: %+v, want %+v", sp.ID(), got[sp.ID()], sp)
		}
	}
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.Audit(0, 10)
	if err != nil || len(recs) != 1 || recs[0].Operation != OpMigrate || !strings.Contains(recs[0].Stream, "migrate from etcd: 2 created") {
		t.Fatalf("audit: %+v, %v", recs, err)
	}
}

// A bbolt file a daemon holds is refused, as source and as destination,
// with a message that says to stop it, and nothing is written to etcd.
func TestMigrateRefusesAFileInUse(t *testing.T) {
	srv := startTestEtcd(t)
	path := filepath.Join(t.TempDir(), "state.db")
	held, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, _, err := held.Put(tcp(9000, "a:1"), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	before := etcdRevision(t, srv)
	for _, args := range [][]string{
		{"--from", path, "--to", "etcd", "--apply"},
		{"--from", path, "--to", "etcd"},
		{"--from", "etcd", "--to", path, "--apply"},
	} {
		out, errOut, code := migrateCmd(srv, args...)
		if code != 1 || !strings.Contains(errOut, path+" is in use by a running stream-conductor: stop it first") {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	if rev := etcdRevision(t, srv); rev != before {
		t.Fatalf("etcd written: revision %d → %d", before, rev)
	}
}

// An import etcd refuses (here: more operations than its --max-txn-ops)
// leaves etcd as it was: the migration is one transaction.
func TestMigrateIsAllOrNothing(t *testing.T) {
	srv := startTestEtcd(t, "--max-txn-ops", "3")
	path := bboltWith(t, tcp(9000, "a:1"), tcp(9001, "a:1"), tcp(9002, "a:1"), tcp(9003, "a:1"))
	fleet := openEtcdTest(t, srv)
	out, errOut, code := migrateCmd(srv, "--from", path, "--to", "etcd", "--apply")
	if code != 1 || !strings.Contains(errOut, "nothing was written") || !strings.Contains(errOut, "max-txn-ops") {
		t.Fatalf("apply over the txn limit: exit %d\n%s%s", code, out, errOut)
	}
	if list, _ := fleet.List(); len(list) != 0 {
		t.Fatalf("etcd holds %d streams after a failed migration", len(list))
	}
	recs, err := fleet.Audit(0, 1)
	if err != nil || len(recs) != 1 || !strings.HasPrefix(recs[0].Result, "failed: ") {
		t.Fatalf("the failed migration's audit record: %+v, %v", recs, err)
	}
}

// Bad command lines exit 2 and say what is wrong; -h exits 0.
func TestMigrateUsage(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.db")
	for _, c := range []struct {
		args      []string
		noEtcdEnv bool
		code      int
		want      string
	}{
		{[]string{"-h"}, false, 0, "Usage: stream-conductor migrate"},
		{nil, false, 2, "--from is required"},
		{[]string{"--from", file}, false, 2, "--to is required"},
		{[]string{"--from", "etcd", "--to", "etcd"}, false, 2, "one of --from and --to must be etcd"},
		{[]string{"--from", file, "--to", file + "2"}, false, 2, "one of --from and --to must be etcd"},
		{[]string{"--from", file, "--to", "etcd", "extra"}, false, 2, `unexpected argument "extra"`},
		{[]string{"--from", file, "--to", "etcd", "--bogus"}, false, 2, "flag provided but not defined"},
		{[]string{"--from", file, "--to", "etcd"}, true, 2, "needs ETCD_ENDPOINTS"},
		{[]string{"--from", file, "--to", "etcd", "--etcd-endpoints", "10.0.0.1:2379"}, true, 2, "ETCD_ENDPOINTS must be http://"},
	} {
		var out, errOut bytes.Buffer
		e := map[string]string{"ETCD_ENDPOINTS": "http://127.0.0.1:1"}
		if c.noEtcdEnv {
			e = nil
		}
		code := runMigrate(c.args, env(e), &out, &errOut)
		if code != c.code || !strings.Contains(out.String()+errOut.String(), c.want) {
			t.Errorf("%v: exit %d, want %d with %q\n%s%s", c.args, code, c.code, c.want, out.String(), errOut.String())
		}
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused command line created a file")
	}
}

// A source file that does not exist is a failure (exit 1), never an empty
// source that a --prune would turn into deleting the fleet's streams.
func TestMigrateMissingSource(t *testing.T) {
	srv := startTestEtcd(t)
	fleet := openEtcdTest(t, srv)
	if _, _, err := fleet.Put(tcp(9000, "a:1"), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "state.db")
	out, errOut, code := migrateCmd(srv, "--from", missing, "--to", "etcd", "--apply", "--prune")
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if list, _ := fleet.List(); len(list) != 1 {
		t.Fatalf("etcd holds %d streams, want 1", len(list))
	}
}
