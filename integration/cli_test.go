package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// cliCode runs a client subcommand and returns its output and exit code.
func (d *daemon) cliCode(args ...string) (string, int) {
	d.t.Helper()
	out, err := d.cli(args...)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out, ee.ExitCode()
	}
	if err != nil {
		d.t.Fatal(err)
	}
	return out, 0
}

// The CLI: tables by default, JSON and YAML on request, exit codes that
// scripts can trust, and apply -f that shows the diff before it changes
// anything.
func TestCLI(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 4)
	be := startEcho(t, "A:")
	id := fmt.Sprintf("tcp/%d", d.portMin)

	out, code := d.cliCode("create", id, be.addr(), "-description", "db")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "active") {
		t.Fatalf("create: %d\n%s", code, out)
	}
	mustEcho(t, d.portMin, "A:")
	out, code = d.cliCode("create", id, be.addr())
	if code != 1 || !strings.Contains(out, fmt.Sprintf("port %d is taken by stream %s", d.portMin, id)) {
		t.Fatalf("create on a taken port: %d\n%s", code, out)
	}
	out, code = d.cliCode("nodes")
	if code != 0 || !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "up") || !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", d.apiPort)) {
		t.Fatalf("nodes: %d\n%s", code, out)
	}
	if out, _ = d.cliCode("nodes", "-o", "json"); !strings.Contains(out, `"applied_revision"`) {
		t.Fatalf("nodes -o json:\n%s", out)
	}
	out, code = d.cliCode("ls")
	if code != 0 || !strings.HasPrefix(out, "ID") || !strings.Contains(out, be.addr()) || !strings.Contains(out, "db") {
		t.Fatalf("ls: %d\n%s", code, out)
	}
	out, _ = d.cliCode("ls", "-o", "json")
	if !strings.HasPrefix(strings.TrimSpace(out), "[") || !strings.Contains(out, `"id": "`+id+`"`) {
		t.Fatalf("ls -o json:\n%s", out)
	}
	out, _ = d.cliCode("get", id, "-o", "yaml")
	if !strings.Contains(out, "id: "+id) || !strings.Contains(out, "state: active") {
		t.Fatalf("get -o yaml:\n%s", out)
	}
	if out, code = d.cliCode("get", "tcp/1"); code != 3 {
		t.Fatalf("get of a missing stream: %d\n%s", code, out)
	}
	if out, code = d.cliCode("create", fmt.Sprintf("tcp/%d", d.portMax), "bad;backend"); code != 1 || !strings.Contains(out, "backends") {
		t.Fatalf("create with a bad backend: %d\n%s", code, out)
	}
	if out, code = d.cliCode("frobnicate"); code == 0 {
		t.Fatalf("an unknown subcommand succeeded:\n%s", out)
	}
	if out, code = d.cliCode("get"); code != 2 {
		t.Fatalf("get without an id: %d\n%s", code, out)
	}
	out, code = d.cliCode("status")
	if code != 0 || !strings.Contains(out, "1 active") {
		t.Fatalf("status: %d\n%s", code, out)
	}

	// apply: a YAML file makes the node match it.
	file := filepath.Join(t.TempDir(), "streams.yaml")
	yaml := fmt.Sprintf("- protocol: tcp\n  listen: %d\n  backend: %s\n- protocol: tcp\n  listen: %d\n  backend: %s\n", d.portMin+1, be.addr(), d.portMin+2, be.addr())
	os.WriteFile(file, []byte(yaml), 0o644)
	out, code = d.cliCode("apply", "-f", file, "-prune", "-dry-run")
	if code != 0 || !strings.Contains(out, "2 to create, 0 to update, 1 to delete") || !strings.Contains(out, "- "+id) {
		t.Fatalf("apply -dry-run: %d\n%s", code, out)
	}
	if _, code := d.cliCode("get", id); code != 0 {
		t.Fatal("a dry run deleted a stream")
	}
	out, code = d.cliCode("apply", "-f", file, "-prune")
	if code != 0 || !strings.Contains(out, "applied") {
		t.Fatalf("apply: %d\n%s", code, out)
	}
	mustEcho(t, d.portMin+1, "A:")
	mustEcho(t, d.portMin+2, "A:")
	if _, code := d.cliCode("get", id); code != 3 {
		t.Fatal("apply -prune left a stream the file does not name")
	}
	if out, code = d.cliCode("rm", fmt.Sprintf("tcp/%d", d.portMin+1)); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("rm: %d\n%s", code, out)
	}
	waitRefused(t, d.portMin+1)

	cmd := exec.Command(binary, "ls", "-url", "http://127.0.0.1:1")
	o, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 || !strings.Contains(string(o), "not answering") {
		t.Fatalf("ls with no daemon: %v\n%s", err, o)
	}
}
