package nginx

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeBin writes an nginx stand-in that prints what the file "say" next
// to it holds and exits 1 when there is one, 0 otherwise.
func fakeBin(t *testing.T) (bin string, say func(string)) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "nginx")
	msg := filepath.Join(dir, "say")
	script := "#!/bin/sh\nif [ -s " + msg + " ]; then cat " + msg + " >&2; exit 1; fi\nexit 0\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, func(s string) {
		if err := os.WriteFile(msg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// External's Running says what the last reload found: a master to signal,
// or none (nginx's own words for a missing or stale pid file). A reload
// nginx refuses for another reason says nothing about whether it runs.
func TestExternalRunningFollowsTheLastReload(t *testing.T) {
	bin, say := fakeBin(t)
	x := &External{Bin: bin}
	ctx := context.Background()
	if !x.Running() || x.Supervises() {
		t.Fatal("before any reload: running and not supervised")
	}
	for _, down := range []string{
		`nginx: [error] open() "/run/nginx.pid" failed (2: No such file or directory)`,
		`nginx: [error] invalid PID number "" in "/run/nginx.pid"`,
		`nginx: [alert] kill(4242, 1) failed (3: No such process)`,
	} {
		say(down + "\n")
		var ne *Error
		if err := x.Reload(ctx, false); !errors.As(err, &ne) || ne.Op != "reload" {
			t.Fatalf("%s: reload error %v", down, err)
		}
		if x.Running() {
			t.Errorf("running after %q", down)
		}
		say("")
		if err := x.Reload(ctx, false); err != nil || !x.Running() {
			t.Fatalf("a reload that reached nginx: %v, running %v", err, x.Running())
		}
	}
	say("nginx: [emerg] unknown directive \"bogus\" in /etc/nginx/nginx.conf:1\n")
	if err := x.Reload(ctx, false); err == nil || !x.Running() {
		t.Fatalf("a refused reload: %v, running %v", err, x.Running())
	}
}
