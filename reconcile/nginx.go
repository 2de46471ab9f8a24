package reconcile

import (
	"context"

	"github.com/streamconductor/stream-conductor/stream"
)

// Nginx is the data plane as the reconciler drives it, whole: every
// method is asked of every implementation, none is found by a type
// assertion. The real implementations are package nginx's Managed and
// External; tests use a fake. All methods are called from the Run
// goroutine only.
type Nginx interface {
	// Prepare checks the nginx binary and writes what must exist before
	// nginx can run, sized for streams streams; it is called at the start
	// of every pass and is cheap once it has succeeded.
	Prepare(ctx context.Context, streams int) error
	// Supervises reports whether nginx is ours to start, restart and
	// recover (managed); when it is not (external), a pass only tests and
	// reloads, and Recover and Start are never called.
	Supervises() bool
	// Running reports whether an nginx master serves our configuration.
	Running() bool
	// PID is that master's process id (0: none, or not known).
	PID() int
	// Quit stops a supervised master for good, gracefully, once it has no
	// stream left (a shard of the pool that is no longer needed), and
	// removes its files.
	Quit(ctx context.Context) error
	// Recover clears what a dead nginx left behind before it is started
	// again.
	Recover(ctx context.Context) error
	// Start starts nginx on the files on disk and returns once it listens,
	// or an *nginx.Error saying why it could not.
	Start(ctx context.Context) error
	// Test runs `nginx -t` over the files on disk; on failure it returns an
	// *nginx.Error with nginx's diagnostics.
	Test(ctx context.Context) error
	// Reload makes nginx load the files on disk and returns once nginx has
	// applied them, or an *nginx.Error saying why it did not. With retire it
	// also waits until the old workers stopped accepting connections, which
	// a stream changed in place or removed needs before it is applied.
	Reload(ctx context.Context, retire bool) error
	// Confirms reports whether Start and Reload return only once their
	// result is in effect (ports bound, old workers no longer accepting),
	// so that the socket table need not be checked.
	Confirms() bool
	// HeldPorts returns the ids of the streams (tcp/9000) whose port the
	// running nginx holds, or nil when that is not known.
	HeldPorts() map[stream.ID]bool

	// MainConfig is the main configuration stream-conductor owns (nil in
	// external mode); it is part of what counts as applied.
	MainConfig() []byte
	// MainDrifted reports whether the main configuration on disk is not
	// MainConfig (always false when there is none of ours).
	MainDrifted() bool
	// TakeMainRepaired reports, once, that Prepare rewrote the main
	// configuration under a running nginx: the next apply must reload.
	TakeMainRepaired() bool
	// Signalled reports whether nginx logged a signal since the last call
	// (someone may have reloaded it), or cannot tell; false when nginx's
	// log is not ours to read.
	Signalled() bool
}
