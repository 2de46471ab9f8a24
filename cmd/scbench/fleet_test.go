package main

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

// children finds a process the test started among the children of the
// test's process, and readMemory reads a live process's RSS and PSS.
func TestChildrenAndMemory(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	if got := children(os.Getpid()); !slices.Contains(got, cmd.Process.Pid) {
		t.Fatalf("children(%d) = %v, want %d among them", os.Getpid(), got, cmd.Process.Pid)
	}
	if rss, pss := readMemory(os.Getpid()); rss <= 0 || pss <= 0 || pss > rss*2 {
		t.Fatalf("readMemory = %.1f MB RSS, %.1f MB PSS", rss, pss)
	}
	if rss, pss := readMemory(-1); rss != 0 || pss != 0 {
		t.Fatalf("readMemory of no process = %v, %v", rss, pss)
	}
}

// nginxMaster trusts a pid file only when it names an nginx master on the
// node's own data dir: a pid file naming another process is ignored, so
// that stop never signals it.
func TestNginxMasterTrustsOnlyOurs(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(dir+"/nginx", 0o755)
	if nginxMaster(dir) != 0 {
		t.Fatal("no pid file: want 0")
	}
	os.WriteFile(dir+"/nginx/nginx.pid", []byte("1\n"), 0o644) // init, not nginx
	if got := nginxMaster(dir); got != 0 {
		t.Fatalf("a pid file naming pid 1: %d, want 0", got)
	}
	os.WriteFile(dir+"/nginx/nginx.pid", []byte("0\n"), 0o644)
	if got := nginxMaster(dir); got != 0 {
		t.Fatalf("a pid file naming pid 0: %d, want 0", got)
	}
}
