package nginx

import (
	"context"
	"strings"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// External drives a system nginx whose configuration already includes
// STREAM_CONFIG_PATH/*.conf inside stream {}: it only tests and reloads.
// The main configuration, the process and its logs are the operator's.
type External struct {
	Bin string
	// Timeout bounds each nginx command (default 10s): `nginx -t` can
	// hang, on a FIFO in an included directory, say.
	Timeout time.Duration
	// noMaster: the last reload found no master to signal.
	noMaster bool
}

// Supervises is false: a system nginx is started, restarted and watched
// by its own service manager, so Recover and Start are never needed.
func (x *External) Supervises() bool { return false }

// Running reports whether the last `nginx -s reload` reached a master
// (true before the first): a system nginx is not ours to watch, and the
// signal is what tells.
func (x *External) Running() bool { return !x.noMaster }

// Prepare does nothing: the system nginx is the operator's.
func (x *External) Prepare(ctx context.Context, streams int) error { return nil }

// Recover does nothing: a system nginx is not ours to clean up.
func (x *External) Recover(ctx context.Context) error { return nil }

// Start is not possible in external mode.
func (x *External) Start(ctx context.Context) error {
	return &Error{Op: "start", Output: "external nginx is not running; start it with its own service manager"}
}

// Test runs `nginx -t`.
func (x *External) Test(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, x.timeout())
	defer cancel()
	out, err := run(ctx, x.Bin, "-t", "-q")
	if err != nil {
		return failed("test", out, err)
	}
	return nil
}

// Reload runs `nginx -s reload`. nginx reports only that the signal was
// sent; the reconciler's look at the socket table verifies the result.
func (x *External) Reload(ctx context.Context, retire bool) error {
	ctx, cancel := context.WithTimeout(ctx, x.timeout())
	defer cancel()
	out, err := run(ctx, x.Bin, "-s", "reload")
	x.noMaster = err != nil && noMaster(out)
	if err != nil {
		return failed("reload", out, err)
	}
	return nil
}

// noMaster reports whether `nginx -s` failed for want of a master: no pid
// file, an empty one, or a pid that names no process.
func noMaster(out string) bool {
	return strings.Contains(out, "invalid PID number") ||
		strings.Contains(out, ".pid\" failed (2:") ||
		strings.Contains(out, "failed (3: No such process)")
}

// Confirms is false: `nginx -s reload` only sends a signal.
func (x *External) Confirms() bool { return false }

// MainConfig is nil: the main configuration is the operator's.
func (x *External) MainConfig() []byte { return nil }

// MainDrifted is false: the main configuration is not ours to watch.
func (x *External) MainDrifted() bool { return false }

// TakeMainRepaired is false: the main configuration is never rewritten.
func (x *External) TakeMainRepaired() bool { return false }

// Signalled is false: the system nginx's log is not ours to follow.
func (x *External) Signalled() bool { return false }

// PID is not known: the operator's nginx is not ours.
func (x *External) PID() int { return 0 }

// Quit is never asked of an nginx we do not supervise.
func (x *External) Quit(ctx context.Context) error { return nil }

// HeldPorts is nil: which sockets the system nginx holds is not looked at.
func (x *External) HeldPorts() map[stream.ID]bool { return nil }

func (x *External) timeout() time.Duration {
	if x.Timeout <= 0 {
		return 10 * time.Second
	}
	return x.Timeout
}
