// Package writes is the one path every change of the desired state takes,
// whoever asks: the v1 routes, the seed routes, imports, POST allocation
// expiry (expiry.go) and the fleet. It validates a spec, applies the
// backend policy, checks the listen port, commits with a precondition,
// waits for the reconciler to apply the revision and undoes what nginx
// refused — whether or not anyone is still waiting for the answer. It
// speaks no HTTP: each operation returns a result or a typed error, and
// the API turns them into status codes.
package writes

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// Applier is the reconciler as the write path uses it.
type Applier interface {
	// WaitApplied blocks until every write up to revision rev has been
	// applied (each stream active or failed) by the nodes that serve
	// specs — the streams the write is about (all nodes when it names
	// none) — or ctx ends.
	WaitApplied(ctx context.Context, rev uint64, specs []stream.Spec) error
	// Refused says whether nginx refused stream id at revision rev (in
	// a fleet, on every live node that serves it), and why.
	Refused(id stream.ID, rev uint64) (reason string, refused bool)
	// BindConflict returns nil when s's listen address is free (or our
	// nginx holds it already), and otherwise why another process holds
	// it, worded like nginx's bind() message.
	BindConflict(s stream.Spec) error
	// Leftover returns nil once nothing of the deleted stream id is left
	// in nginx's configuration, and otherwise why.
	Leftover(id stream.ID) error
}

// Policy decides where streams may point. Its error reaches the caller
// in a *PolicyError, so that the API can answer 403 with the rule it
// names.
type Policy interface {
	// Check returns an error for the first backend (canonical host:port)
	// a rule refuses, or nil.
	Check(ctx context.Context, backends []string) error
	// CheckLoop returns an error when one of backends (of stream sp) is
	// sp itself: one of its own ports on an address it listens on.
	CheckLoop(ctx context.Context, sp stream.Spec, backends []string) error
}

// Undo is a write that the path took back because nginx refused it.
type Undo struct {
	// Stream is the id of the stream.
	Stream string
	// Refused is the spec nginx refused, as it was stored.
	Refused stream.Spec
	// Restored is the spec put back; nil when the write created the
	// stream, which is now gone.
	Restored *stream.Spec
	// Reason is nginx's message.
	Reason string
	// By says who asked for the refused write (a request id).
	By string
}

// Config holds the node's rules and the write path's bounds.
type Config struct {
	// PortMin and PortMax are PORT_RANGE, inclusive; PortMax 0 means
	// no range, so nothing to allocate.
	PortMin, PortMax int
	// Reserved ports are never given to a stream (the API's own).
	Reserved []int
	// MapHashBucketSize is nginx's map_hash_bucket_size around our files
	// (nginxconf.Rules).
	MapHashBucketSize int
	// NoSessionLog: nginx's session log does not reach the daemon
	// (external mode), so ban policies are refused (nginxconf.Rules).
	NoSessionLog bool
	// Ephemeral and KernelReserved are the kernel's ephemeral ports and
	// those reserved from them (see nginxconf.Rules); Hi 0: unknown.
	Ephemeral      procfs.PortRange
	KernelReserved []procfs.PortRange
	// ApplyTimeout is how long nginx normally takes at most to apply a
	// write (APPLY_TIMEOUT).
	ApplyTimeout time.Duration
	// UndoWindow bounds how long the path keeps watching a write for a
	// refusal to undo, detached from whoever asked; default three
	// ApplyTimeouts. A write refused later stays stored, failed.
	UndoWindow time.Duration
	// OnUndo, when set, is told of every undo (the audit log).
	OnUndo func(Undo)
	// Now is the clock of deadlines (expiry.go); default time.Now.
	Now func() time.Time
	Log zerolog.Logger
}

// Path is the write path.
type Path struct {
	cfg    Config
	st     desired.State
	ap     Applier
	policy Policy
	log    zerolog.Logger
	// ctx ends at Close; watches holds the detached watches of writes.
	ctx     context.Context
	cancel  context.CancelFunc
	watches sync.WaitGroup
}

// New returns the write path over st.
func New(cfg Config, st desired.State, ap Applier, policy Policy) *Path {
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.UndoWindow <= 0 {
		cfg.UndoWindow = 3 * cfg.ApplyTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Path{cfg: cfg, st: st, ap: ap, policy: policy, ctx: ctx, cancel: cancel,
		log: cfg.Log.With().Str("component", "writes").Logger()}
}

// Close stops watching the writes still unsettled (they are not undone)
// and waits until the watches have stopped.
func (p *Path) Close() {
	p.cancel()
	p.watches.Wait()
}

// Rules are the node's limits on a spec.
func (p *Path) Rules() nginxconf.Rules {
	return nginxconf.Rules{PortMin: p.cfg.PortMin, PortMax: p.cfg.PortMax, Reserved: p.cfg.Reserved,
		MapHashBucketSize: p.cfg.MapHashBucketSize, Ephemeral: p.cfg.Ephemeral, KernelReserved: p.cfg.KernelReserved,
		NoSessionLog: p.cfg.NoSessionLog}
}

// Check validates sp against the node's rules and the backend policy,
// and returns it in canonical form. It changes nothing: writes and dry
// runs share it. The error is a *nginxconf.FieldError (a stream that
// would forward to itself among them) or a *PolicyError.
func (p *Path) Check(ctx context.Context, sp stream.Spec) (stream.Spec, error) {
	sp, err := p.validate(sp)
	if err != nil {
		return sp, err
	}
	if err := p.checkPolicy(ctx, sp); err != nil {
		return sp, err
	}
	return sp, nil
}

// validate is nginxconf.Validate with the node's rules, and sets the
// deadline of an expiring stream (resolveExpiry).
func (p *Path) validate(sp stream.Spec) (stream.Spec, error) {
	sp, err := nginxconf.Validate(sp, p.Rules())
	if err != nil {
		return sp, err
	}
	return p.resolveExpiry(sp)
}

func (p *Path) checkPolicy(ctx context.Context, sp stream.Spec) error {
	if p.policy == nil {
		return nil
	}
	field := "backends"
	if sp.Routed() {
		field = "default"
	}
	if err := p.checkBackends(ctx, sp, field, sp.Backends); err != nil {
		return err
	}
	for i, r := range sp.Routes {
		if err := p.checkBackends(ctx, sp, fmt.Sprintf("routes[%d].backends", i), r.Backends); err != nil {
			return err
		}
	}
	return nil
}

// checkBackends judges backends, those of sp in field: a rule that
// refuses one is a *PolicyError; a stream that would forward to itself is
// a *nginxconf.FieldError (400), since no setting makes it work.
func (p *Path) checkBackends(ctx context.Context, sp stream.Spec, field string, backends []string) error {
	if err := p.policy.Check(ctx, backends); err != nil {
		return &PolicyError{Field: field, Err: err}
	}
	if err := p.policy.CheckLoop(ctx, sp, backends); err != nil {
		return &nginxconf.FieldError{Field: field, Message: err.Error()}
	}
	return nil
}

func (p *Path) reserved(port int) bool { return slices.Contains(p.cfg.Reserved, port) }

// held reports whether port may not be given to a new stream like sp:
// it is reserved or another process holds it.
func (p *Path) held(sp stream.Spec, port int) bool {
	if p.reserved(port) {
		return true
	}
	sp.Listen = port
	return p.ap.BindConflict(sp) != nil
}

// FreePorts lists, in order, up to limit ports (all when limit is 0) of
// the range on which a new stream like sp could listen now: not
// reserved, no stream of its protocol (a range's ports are its stream's),
// not held by another process. Nothing is reserved by the answer; Create
// allocates atomically.
func (p *Path) FreePorts(sp stream.Spec, limit int) []int {
	var free []int
	taken := p.takenPorts(sp.Protocol)
	for port := p.cfg.PortMin; port <= p.cfg.PortMax && p.cfg.PortMax > 0; port++ {
		if taken(port) || p.held(sp, port) {
			continue
		}
		free = append(free, port)
		if limit > 0 && len(free) == limit {
			break
		}
	}
	return free
}

// takenPorts returns a test of whether a stream of protocol proto
// listens on a port now, a range's every port included.
func (p *Path) takenPorts(proto stream.Protocol) func(port int) bool {
	specs, _ := p.st.List()
	var ranges []stream.Spec
	for _, sp := range specs {
		if sp.Protocol == proto && sp.IsRange() {
			ranges = append(ranges, sp)
		}
	}
	return func(port int) bool {
		if _, err := p.st.Get(stream.ID{Protocol: proto, Port: port}); err == nil {
			return true
		}
		return slices.ContainsFunc(ranges, func(r stream.Spec) bool { return r.Covers(port) })
	}
}
