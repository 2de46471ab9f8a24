// Package nginx drives nginx for the reconciler: Managed runs a master of
// its own on a main configuration it writes, adopts it after a restart of
// stream-conductor, follows its error log, retires old workers and
// recovers from a master that died; External only tests and reloads the
// operator's nginx. Both satisfy the interface the reconciler defines
// (reconcile.Nginx); what to render is not decided here.
package nginx

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/streamconductor/stream-conductor/nginxconf"
)

// Error is a failure that nginx explained.
type Error struct {
	Op     string // "test", "start" or "reload"
	Output string // what nginx printed
	Diags  []nginxconf.Diagnostic
}

func (e *Error) Error() string {
	for _, d := range e.Diags {
		if d.IsFatal() {
			return "nginx " + e.Op + ": " + d.Message + location(d)
		}
	}
	return "nginx " + e.Op + ": " + strings.TrimSpace(e.Output)
}

// Refused reports whether nginx refused in words: one of its diagnostics
// is fatal. A timeout, a shutdown or a dead master is not a refusal.
func (e *Error) Refused() bool {
	for _, d := range e.Diags {
		if d.IsFatal() {
			return true
		}
	}
	return false
}

func location(d nginxconf.Diagnostic) string {
	if d.File == "" {
		return ""
	}
	return fmt.Sprintf(" in %s:%d", d.File, d.Line)
}

// failed is the *Error for op when nginx ran and exited non-zero.
func failed(op, out string, err error) *Error {
	return &Error{Op: op, Output: out + err.Error(), Diags: nginxconf.ParseDiagnostics(out)}
}

// reaping orders the commands run executes against reapZombies: as PID 1
// the daemon is every orphan's parent, and a reaper that collected a
// command's exit status before exec's Wait did would fail that command
// (ECHILD). Commands hold it shared, the reaper exclusively; several
// shards of the pool run commands and reap at once.
var reaping sync.RWMutex

// run executes nginx with args and returns its combined output.
func run(ctx context.Context, bin string, args ...string) (string, error) {
	reaping.RLock()
	defer reaping.RUnlock()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// childEnv is our environment without the API tokens, so that nginx (which
// outlives us) never holds them.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "API_TOKEN=") || strings.HasPrefix(kv, "API_READ_TOKEN=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
