package writes

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// maxRangeTries bounds the runs a range allocation tries to store: each
// lost one went to a concurrent writer (or to a port held meanwhile).
const maxRangeTries = 32

// CreateRange stores sp as a range of n ports on the first free run of n
// consecutive ports of PORT_RANGE: none reserved, none of another stream
// of sp's protocol (a range's ports included), none held by another
// process, none in the kernel's ephemeral ports unless reserved from
// them. sp's Listen and ListenEnd are ignored.
//
// The run is stored create-only, and both stores check a write's ports
// against every other stream's in the write's own transaction: two
// concurrent allocations never get ports in common. The one that loses
// (port_conflict, or its first port's key created meanwhile) tries the
// next free run, up to maxRangeTries runs.
func (p *Path) CreateRange(ctx context.Context, sp stream.Spec, n int, by string) (Result, error) {
	if err := p.rangeAllocatable(sp, n); err != nil {
		return Result{}, err
	}
	start := p.cfg.PortMin
	for range maxRangeTries {
		cand, err := p.nextRun(ctx, sp, n, start)
		if err != nil {
			return Result{}, err
		}
		stored, _, err := p.st.Put(cand, desired.Match{Absent: true})
		if errors.Is(err, desired.ErrPortConflict) || errors.Is(err, desired.ErrExists) {
			start = pastConflict(cand, err)
			continue
		}
		if err != nil {
			return Result{}, err
		}
		p.log.Info().Stringer("stream", stored.ID()).Str("ports", stored.Ports()).Uint64("revision", stored.Revision).Bool("created", true).Str("by", by).Msg("stored")
		pending := p.watch(stored.Revision, []item{{stored: stored, undo: true}}, by)
		return Result{Stored: stored, Created: true, Changed: true, Pending: pending}, nil
	}
	return Result{}, fmt.Errorf("allocate %d %s ports in %d-%d: %d runs went to concurrent writers: %w",
		n, sp.Protocol, p.cfg.PortMin, p.cfg.PortMax, maxRangeTries, desired.ErrNoFreePort)
}

// pastConflict is where the next run after cand starts once storing cand
// failed with err: past the ports another stream took (a
// *desired.PortConflictError names them), else past cand's first port.
func pastConflict(cand stream.Spec, err error) int {
	next := cand.Listen + 1
	var pc *desired.PortConflictError
	if errors.As(err, &pc) {
		if _, last, perr := stream.ParsePorts(pc.Ports); perr == nil {
			next = max(next, last+1)
		}
	}
	return next
}

// PlanCreateRange is CreateRange changing nothing: sp validated, on the
// run a create would choose now.
func (p *Path) PlanCreateRange(ctx context.Context, sp stream.Spec, n int) (stream.Spec, error) {
	if err := p.rangeAllocatable(sp, n); err != nil {
		return sp, err
	}
	return p.nextRun(ctx, sp, n, p.cfg.PortMin)
}

// rangeAllocatable refuses an allocation of n ports that no run can
// take: no PORT_RANGE, n out of 2..stream.MaxRangePorts.
func (p *Path) rangeAllocatable(sp stream.Spec, n int) error {
	if p.cfg.PortMax == 0 {
		return errNoRange
	}
	if n < 2 || n > stream.MaxRangePorts {
		return &nginxconf.FieldError{Field: "ports", Message: fmt.Sprintf("a range has 2 to %d ports, not %d", stream.MaxRangePorts, n)}
	}
	// Every run would look held when nginx may take no more streams:
	// ask about a new stream on port 0, as Create does.
	probe := sp
	probe.Listen, probe.ListenEnd = 0, 0
	if err := p.ap.BindConflict(probe); errors.Is(err, stream.ErrStreamLimit) {
		return err
	}
	return nil
}

// nextRun is sp validated on the first free run of n ports at or after
// port start (see CreateRange), as the stores and this host are now.
func (p *Path) nextRun(ctx context.Context, sp stream.Spec, n, start int) (stream.Spec, error) {
	taken := p.takenPorts(sp.Protocol)
	for first := max(start, p.cfg.PortMin); first+n-1 <= p.cfg.PortMax; {
		if bad := p.lastUnfit(sp.Protocol, taken, first, first+n-1); bad != 0 {
			first = bad + 1
			continue
		}
		cand := sp
		cand.Listen, cand.ListenEnd = first, first+n-1
		cand, err := p.Check(ctx, cand)
		if err != nil {
			return cand, err
		}
		err = p.ap.BindConflict(cand)
		if errors.Is(err, stream.ErrStreamLimit) {
			return cand, err
		}
		if err != nil { // some port is held: past the first one
			first = p.firstHeld(sp, first, first+n-1) + 1
			continue
		}
		return cand, nil
	}
	return sp, fmt.Errorf("allocate %d %s ports in %d-%d: no run of %d free ports: %w",
		n, sp.Protocol, p.cfg.PortMin, p.cfg.PortMax, n, desired.ErrNoFreePort)
}

// lastUnfit is the last port of [first, last] that a new range may not
// take without asking the kernel (a stream has it, it is reserved, or it
// is an ephemeral port not reserved from the kernel), or 0 when there is
// none: the next run to try starts past it.
func (p *Path) lastUnfit(proto stream.Protocol, taken func(int) bool, first, last int) int {
	for port := last; port >= first; port-- {
		if taken(port) || p.reserved(port) || p.ephemeral(port) {
			return port
		}
	}
	return 0
}

// firstHeld is the first port of [first, last] another process holds
// (first when the probe of the whole run failed but none alone does).
func (p *Path) firstHeld(sp stream.Spec, first, last int) int {
	sp.ListenEnd = 0
	for port := first; port <= last; port++ {
		if p.held(sp, port) {
			return port
		}
	}
	return first
}

// ephemeral reports whether port is one of the kernel's ephemeral ports
// that is not reserved from them: a range may not take it (see
// nginxconf's checkEphemeral).
func (p *Path) ephemeral(port int) bool {
	e := p.cfg.Ephemeral
	if e.Hi == 0 || port < e.Lo || port > e.Hi {
		return false
	}
	return !slices.ContainsFunc(p.cfg.KernelReserved, func(k procfs.PortRange) bool { return port >= k.Lo && port <= k.Hi })
}
