package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// cli runs a client subcommand of the real binary against d.
func (d *daemon) cli(args ...string) (string, error) {
	d.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "STREAM_CONDUCTOR_URL=http://127.0.0.1:"+strconv.Itoa(d.apiPort))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestExportImportAndBackupRestore(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`","description":"first"}`)
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)

	exported, err := d.cli("export")
	if err != nil || !strings.Contains(exported, `"description": "first"`) {
		t.Fatalf("export: %v\n%s", err, exported)
	}
	file := filepath.Join(t.TempDir(), "streams.json")
	if err := os.WriteFile(file, []byte(exported), 0o644); err != nil {
		t.Fatal(err)
	}
	code, backup := d.apiRaw("GET", "/v1/backup", "")
	if code != 200 || len(backup) == 0 {
		t.Fatalf("backup: %d, %d bytes", code, len(backup))
	}

	if code, _ := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), ""); code != 204 {
		t.Fatal("delete")
	}
	out, err := d.cli("import", "-dry-run", file)
	if err != nil || !strings.Contains(out, "1 to create, 0 to update, 0 to delete, 1 unchanged") || !strings.Contains(out, fmt.Sprintf("+ tcp/%d", d.portMin)) {
		t.Fatalf("import -dry-run: %v\n%s", err, out)
	}
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), ""); code != 404 {
		t.Fatal("a dry run changed the store")
	}
	if out, err := d.cli("import", file); err != nil || !strings.Contains(out, "imported: 1 to create") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	mustEcho(t, d.portMin, "A:")

	// A file with one bad stream changes nothing and says which.
	bad := strings.Replace(exported, be.addr(), "bad;host:1", 1)
	os.WriteFile(file, []byte(bad), 0o644)
	if out, err := d.cli("import", file); err == nil || !strings.Contains(out, "streams[0].backends") {
		t.Fatalf("bad import: %v\n%s", err, out)
	}

	// Restore the backup taken before the delete: stop, replace, start.
	d.mustPut("tcp", d.portMin+2, `{"backend":"`+be.addr()+`"}`)
	d.stop()
	if err := os.WriteFile(filepath.Join(d.dataDir, "state.db"), backup, 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	_, m := d.api("GET", "/v1/streams", "")
	if n := len(m["streams"].([]any)); n != 2 {
		t.Fatalf("%d streams after restoring the backup, want 2", n)
	}
	mustEcho(t, d.portMin, "A:")
	waitRefused(t, d.portMin+2)
	if out, err := exec.Command(binary, "export", "-url", "http://127.0.0.1:1").CombinedOutput(); err == nil || !strings.Contains(string(out), "not answering") {
		t.Fatalf("export against no daemon: %v %s", err, out)
	}
}
