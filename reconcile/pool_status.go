package reconcile

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/streamconductor/stream-conductor/stream"
)

// WaitApplied blocks until the shards of specs (every shard when specs is
// empty) have applied every write up to store revision rev, or ctx ends. A
// shard whose list did not change is not waited for: a write waits for
// its own stream's shard only.
func (p *Pool) WaitApplied(ctx context.Context, rev uint64, specs []stream.Spec) error {
	for {
		p.progMu.Lock()
		ch := p.progress
		p.progMu.Unlock()
		if p.appliedFor(rev, specs) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// appliedFor reports whether the shards of specs applied rev.
func (p *Pool) appliedFor(rev uint64, specs []stream.Spec) bool {
	tl := timelineOf(p.store)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.listedRev < rev || p.listedTL != tl {
		return false
	}
	if len(specs) == 0 {
		for _, s := range p.shards {
			if s != nil && !p.shardApplied(s, rev) {
				return false
			}
		}
		return true
	}
	for _, sp := range specs {
		id := sp.ID()
		if _, moving := p.withheld[id]; moving {
			return false
		}
		k, placed := p.place[id]
		if !placed {
			continue // not this node's, or its deletion is applied
		}
		if s := p.shards[k]; s != nil && !p.shardApplied(s, rev) {
			return false
		}
	}
	return true
}

// shardOf returns the shard stream id is placed on, if any.
func (p *Pool) shardOf(id stream.ID) *shard {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k, ok := p.place[id]; ok {
		return p.shards[k]
	}
	return nil
}

// running returns the shards that run.
func (p *Pool) running() []*shard {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*shard
	for _, s := range p.shards {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Status returns stream id's status at revision rev, from its shard:
// pending while it has none yet.
func (p *Pool) Status(id stream.ID, rev uint64) stream.Status {
	if s := p.shardOf(id); s != nil {
		return s.rec.Status(id, rev)
	}
	return stream.Status{State: stream.Pending, Revision: rev}
}

// StatusVersion changes whenever a stream's status may have.
func (p *Pool) StatusVersion() uint64 {
	p.mu.Lock()
	v := p.version + p.retired
	shards := slices.Clone(p.shards)
	p.mu.Unlock()
	for _, s := range shards {
		if s != nil {
			v += s.rec.StatusVersion()
		}
	}
	return v
}

// NodeStatus sums the shards' status: counters and stream counts added,
// lists joined, nginx running when every shard's master runs, the applied
// revision the lowest any shard has reached; Shards has each one's.
func (p *Pool) NodeStatus() stream.NodeStatus {
	var h stream.NodeStatus
	var errs []string
	for _, s := range p.running() {
		ns := s.rec.NodeStatus()
		c := &h.Counters
		for _, pair := range [][2]*uint64{
			{&c.Passes, &ns.Counters.Passes}, {&c.FailedPasses, &ns.Counters.FailedPasses}, {&c.Tests, &ns.Counters.Tests},
			{&c.Reloads, &ns.Counters.Reloads}, {&c.Starts, &ns.Counters.Starts}, {&c.FilesWritten, &ns.Counters.FilesWritten},
			{&c.FilesRemoved, &ns.Counters.FilesRemoved}, {&c.Quarantined, &ns.Counters.Quarantined},
			{&c.DriftDetected, &ns.Counters.DriftDetected}, {&c.DriftRepairs, &ns.Counters.DriftRepairs},
			{&c.ListenDrift, &ns.Counters.ListenDrift}, {&c.MainConfigRepairs, &ns.Counters.MainConfigRepairs},
		} {
			*pair[0] += *pair[1]
		}
		h.Streams.Active += ns.Streams.Active
		h.Streams.Failed += ns.Streams.Failed
		h.NotActive = append(h.NotActive, ns.NotActive...)
		h.Drifted = append(h.Drifted, shardNames(s.k, ns.Drifted)...)
		h.NotListening = append(h.NotListening, ns.NotListening...)
		h.Unremovable = append(h.Unremovable, shardNames(s.k, ns.Unremovable)...)
		if ns.LastPass.After(h.LastPass) {
			h.LastPass = ns.LastPass
		}
		if ns.LastError != "" {
			errs = append(errs, shardLabel(s.k)+ns.LastError)
		}
		if h.Stuck == "" {
			h.Stuck = ns.Stuck
		}
		h.OpenFiles = ns.OpenFiles
		h.Shards = append(h.Shards, stream.ShardStatus{Shard: s.k, PID: ns.NginxPID, Running: ns.NginxRunning,
			Streams: ns.Streams.Active + ns.Streams.Failed, Reloads: ns.Counters.Reloads + ns.Counters.Starts,
			LastError: ns.LastError, Draining: s.draining})
	}
	h.LastError = strings.Join(errs, "; ")
	h.NginxRunning = len(h.Shards) > 0
	for _, sh := range h.Shards {
		h.NginxRunning = h.NginxRunning && sh.Running
	}
	h.AppliedRevision = p.appliedRevision()
	if h.Drifted == nil {
		h.Drifted = []string{}
	}
	slices.Sort(h.Drifted)
	slices.Sort(h.NotListening)
	slices.SortFunc(h.NotActive, func(a, b stream.StreamStatus) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	if len(h.Shards) == 1 {
		h.Shards = nil // one master: nothing to tell apart
	}
	return h
}

// appliedRevision is the revision every shard has applied (within the
// store's current timeline; 0 when none).
func (p *Pool) appliedRevision() uint64 {
	tl := timelineOf(p.store)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.listedTL != tl {
		return 0
	}
	rev := p.listedRev
	for _, s := range p.shards {
		if s == nil || p.shardApplied(s, p.listedRev) {
			continue
		}
		ar, stl := s.rec.appliedAt()
		if stl != tl {
			return 0
		}
		rev = min(rev, ar)
	}
	return rev
}

// shardLabel prefixes what one shard says, but for shard 0 ("" then).
func shardLabel(k int) string {
	if k == 0 {
		return ""
	}
	return fmt.Sprintf("shard %d: ", k)
}

// shardNames gives the files of shard k their path from the stream
// configuration directory ("shard-3/sc-tcp-9000.conf").
func shardNames(k int, names []string) []string {
	if k == 0 {
		return names
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = filepath.Join(filepath.Base(ShardDir("", k)), n)
	}
	return out
}

// BindConflict returns why nginx could not bind s's listen address, or nil
// when it is free or a shard serves it already.
func (p *Pool) BindConflict(s stream.Spec) error {
	id := s.ID()
	total := 0
	for _, sh := range p.running() {
		owned, n := sh.rec.owns(id)
		if owned {
			return nil
		}
		total += n
	}
	if of := p.cfg.OpenFiles; of != nil && total+s.PortCount() > of.MaxStreams*p.cfg.Shards {
		return limitError(of)
	}
	return p.preview.cfg.Ports.BindConflict(s, p.cfg.Render.DefaultBind) // New set its default
}

// Leftover returns nil once no shard still serves deleted stream id.
func (p *Pool) Leftover(id stream.ID) error {
	for _, s := range p.running() {
		if err := s.rec.Leftover(id); err != nil {
			return err
		}
	}
	return nil
}

// Preview renders s and reads its file in the directory of its shard (of
// shard 0 for a stream not placed yet), changing nothing.
func (p *Pool) Preview(s stream.Spec) (name string, body, current []byte, err error) {
	dir := p.cfg.Dir
	if sh := p.shardOf(s.ID()); sh != nil {
		dir = ShardDir(p.cfg.Dir, sh.k)
	}
	return p.preview.previewIn(dir, s)
}
