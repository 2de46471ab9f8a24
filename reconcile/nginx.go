package reconcile

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/streamconductor/stream-conductor/nginxconf"
)

// Nginx is the data plane as the reconciler drives it. The real
// implementations are Managed and External; tests use a fake.
type Nginx interface {
	// Prepare checks the nginx binary and writes what must exist before
	// nginx can run; it is called at the start of every pass and is cheap
	// once it has succeeded.
	Prepare(ctx context.Context) error
	// Running reports whether an nginx master serves our configuration.
	Running() bool
	// Recover clears what a dead nginx left behind before it is started
	// again.
	Recover(ctx context.Context) error
	// Start starts nginx on the files on disk and returns once it listens,
	// or an *Error saying why it could not.
	Start(ctx context.Context) error
	// Test runs `nginx -t` over the files on disk; on failure it returns an
	// *Error with nginx's diagnostics.
	Test(ctx context.Context) error
	// Reload makes nginx load the files on disk and returns once nginx has
	// applied them, or an *Error saying why it did not. With retire it also
	// waits until the old workers stopped accepting connections, which a
	// stream changed in place or removed needs before it is applied.
	Reload(ctx context.Context, retire bool) error
	// MainConfig is the main configuration stream-conductor owns (nil in
	// external mode); it is part of what counts as applied.
	MainConfig() []byte
	// Confirms reports whether Start and Reload return only once their
	// result is in effect (ports bound, old workers no longer accepting),
	// so that the socket table need not be checked.
	Confirms() bool
}

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

func location(d nginxconf.Diagnostic) string {
	if d.File == "" {
		return ""
	}
	return fmt.Sprintf(" in %s:%d", d.File, d.Line)
}

// run executes nginx with args and returns its combined output.
func run(ctx context.Context, bin string, args ...string) (string, error) {
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

// External drives a system nginx whose configuration already includes
// STREAM_CONFIG_PATH/*.conf inside stream {}: it only tests and reloads.
type External struct {
	Bin string
}

// Running is always true: a system nginx is not ours to start. A reload of
// an nginx that is not running fails and says so.
func (x *External) Running() bool { return true }

// Prepare does nothing: the system nginx is the operator's.
func (x *External) Prepare(ctx context.Context) error { return nil }

// Recover does nothing: a system nginx is not ours to clean up.
func (x *External) Recover(ctx context.Context) error { return nil }

// Start is not possible in external mode.
func (x *External) Start(ctx context.Context) error {
	return &Error{Op: "start", Output: "external nginx is not running; start it with its own service manager"}
}

// Test runs `nginx -t`.
func (x *External) Test(ctx context.Context) error {
	out, err := run(ctx, x.Bin, "-t", "-q")
	if err != nil {
		return &Error{Op: "test", Output: out + err.Error(), Diags: nginxconf.ParseDiagnostics(out)}
	}
	return nil
}

// Reload runs `nginx -s reload`. nginx reports only that the signal was
// sent; the reconciler's connect probes verify the result.
func (x *External) Reload(ctx context.Context, retire bool) error {
	out, err := run(ctx, x.Bin, "-s", "reload")
	if err != nil {
		return &Error{Op: "reload", Output: out + err.Error(), Diags: nginxconf.ParseDiagnostics(out)}
	}
	return nil
}

// Confirms is false: `nginx -s reload` only sends a signal.
func (x *External) Confirms() bool { return false }

// MainConfig is nil: the main configuration is the operator's.
func (x *External) MainConfig() []byte { return nil }
