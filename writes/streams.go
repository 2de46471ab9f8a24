package writes

import (
	"context"
	"errors"
	"fmt"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// Result is what a write of one stream did.
type Result struct {
	// Stored is the stream as stored: the new spec, or the one that
	// stands when nothing changed.
	Stored stream.Spec
	// Prev is the spec the write replaced (nil: none).
	Prev *stream.Spec
	// Created: the stream did not exist. Changed: something was written.
	Created, Changed bool
	// Pending settles when the write is applied or refused.
	Pending *Pending
}

// Put creates or replaces sp if m holds. A spec equal to the stored one
// (and a precondition it meets) writes nothing. A new stream, or one that
// moves to another bind address, needs its port free of other processes.
// by names who asks (a request id), for the audit of an undo.
func (p *Path) Put(ctx context.Context, sp stream.Spec, m desired.Match, by string) (Result, error) {
	sp, err := p.Check(ctx, sp)
	if err != nil {
		return Result{}, err
	}
	id := sp.ID()
	cur, err := p.st.Get(id)
	exists := err == nil
	if exists && cur.SameDesired(sp) && !m.Absent && (m.Revision == 0 || m.Revision == cur.Revision) {
		return Result{Stored: cur, Pending: p.observe(cur.Revision, []item{{stored: cur}})}, nil
	}
	if probe, ok := newPorts(sp, cur, exists); ok {
		// Another stream's ports are held by our own nginx: name the
		// stream, not a bind() failure. The store checks again, in its
		// transaction.
		specs, _ := p.st.List()
		if err := desired.FirstOverlap(specs, sp); err != nil {
			return Result{}, err
		}
		if err := p.ap.BindConflict(probe); errors.Is(err, stream.ErrStreamLimit) {
			return Result{}, err
		} else if err != nil {
			return Result{}, &PortHeldError{Port: sp.Listen, Range: rangeText(sp), Err: err}
		}
	}
	stored, prev, err := p.st.Put(sp, m)
	if err != nil {
		return Result{}, err
	}
	p.log.Info().Stringer("stream", id).Uint64("revision", stored.Revision).Bool("created", prev == nil).Str("by", by).Msg("stored")
	pending := p.watch(stored.Revision, []item{{stored: stored, prev: prev, undo: true}}, by)
	return Result{Stored: stored, Prev: prev, Created: prev == nil, Changed: true, Pending: pending}, nil
}

// newPorts is the spec whose ports a write of sp over cur (exists: there
// is one) must probe, and whether there are any: all of a new stream's,
// or of one that moves to another bind address; a range that grows, the
// ports it adds (nginx holds the others), as a spec of its own id.
func newPorts(sp, cur stream.Spec, exists bool) (stream.Spec, bool) {
	switch {
	case !exists || cur.Bind != sp.Bind:
		return sp, true
	case sp.LastPort() > cur.LastPort():
		probe := sp
		probe.Listen = cur.LastPort() + 1
		if probe.ListenEnd == probe.Listen {
			probe.ListenEnd = 0
		}
		return probe, true
	}
	return sp, false
}

// rangeText is a range's ports ("10000-10099"), "" for one port.
func rangeText(sp stream.Spec) string {
	if !sp.IsRange() {
		return ""
	}
	return sp.Ports()
}

// allocatable validates sp for a create on a port the path chooses: every
// rule but the port, which it checks on the first port that may be
// given.
func (p *Path) allocatable(ctx context.Context, sp stream.Spec) (stream.Spec, error) {
	if p.cfg.PortMax == 0 {
		return sp, errNoRange
	}
	sp.Listen = 0
	for port := p.cfg.PortMin; port <= p.cfg.PortMax; port++ {
		if !p.reserved(port) {
			sp.Listen = port
			break
		}
	}
	if sp.Listen == 0 {
		return sp, fmt.Errorf("allocate %s port in %d-%d: %w", sp.Protocol, p.cfg.PortMin, p.cfg.PortMax, desired.ErrNoFreePort)
	}
	return p.Check(ctx, sp)
}

// Create stores sp on the first free port of the range, atomically: two
// concurrent creates never get the same port. sp's Listen is ignored.
func (p *Path) Create(ctx context.Context, sp stream.Spec, by string) (Result, error) {
	sp, err := p.allocatable(ctx, sp)
	if err != nil {
		return Result{}, err
	}
	// Every port would look held when nginx may take no more streams: ask
	// about a new stream on port 0, which no stream has and any process
	// may bind, so that only the limit can stand in its way.
	probe := sp
	probe.Listen = 0
	if err := p.ap.BindConflict(probe); errors.Is(err, stream.ErrStreamLimit) {
		return Result{}, err
	}
	stored, err := p.st.Allocate(sp, p.cfg.PortMin, p.cfg.PortMax, func(port int) bool { return p.held(sp, port) })
	if err != nil {
		return Result{}, err
	}
	p.log.Info().Stringer("stream", stored.ID()).Uint64("revision", stored.Revision).Bool("created", true).Str("by", by).Msg("stored")
	pending := p.watch(stored.Revision, []item{{stored: stored, undo: true}}, by)
	return Result{Stored: stored, Created: true, Changed: true, Pending: pending}, nil
}

// PlanCreate is Create changing nothing: sp validated, on the port a
// create would choose now.
func (p *Path) PlanCreate(ctx context.Context, sp stream.Spec) (stream.Spec, error) {
	sp, err := p.allocatable(ctx, sp)
	if err != nil {
		return sp, err
	}
	free := p.FreePorts(sp, 1)
	if len(free) == 0 {
		return sp, desired.ErrNoFreePort
	}
	sp.Listen = free[0]
	return sp, nil
}

// Delete removes the stream id if m holds, and returns what it removed.
func (p *Path) Delete(id stream.ID, m desired.Match) (stream.Spec, *Pending, error) {
	prev, rev, err := p.st.Delete(id, m)
	if err != nil {
		return prev, nil, err
	}
	p.log.Info().Stringer("stream", id).Uint64("revision", rev).Msg("deleted")
	w := p.observe(rev, nil)
	w.deleted = &prev
	return prev, w, nil
}

// DeleteMany removes, in one revision of the desired state where it can
// (see desired.State), every stream of items still at its item's
// revision, and returns them and the revision of the delete (0: none
// deleted). Items whose stream is gone or changed are skipped.
func (p *Path) DeleteMany(items []desired.Conditional) ([]stream.Spec, uint64, error) {
	deleted, rev, err := p.st.DeleteMany(items)
	for _, sp := range deleted {
		p.log.Info().Stringer("stream", sp.ID()).Uint64("revision", rev).Msg("deleted")
	}
	return deleted, rev, err
}

// PlanDelete is Delete changing nothing: the stream a delete with m would
// remove.
func (p *Path) PlanDelete(id stream.ID, m desired.Match) (stream.Spec, error) {
	cur, err := p.st.Get(id)
	if err != nil {
		return cur, err
	}
	if err := m.Check(&cur); err != nil {
		return cur, err
	}
	return cur, nil
}
