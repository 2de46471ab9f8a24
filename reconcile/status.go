package reconcile

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/stream"
)

// WaitApplied blocks until every write up to store revision rev has been
// applied (each stream is active or failed) or ctx ends. rev is of the
// store's current timeline (see Timelined): a revision applied before the
// timeline changed does not count.
func (r *Reconciler) WaitApplied(ctx context.Context, rev uint64) error {
	for {
		tl := r.timeline()
		r.mu.Lock()
		done, ch := r.appliedRev >= rev && r.appliedTL == tl, r.passDone
		r.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// appliedAt returns the revision applied and its timeline.
func (r *Reconciler) appliedAt() (rev, tl uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.appliedRev, r.appliedTL
}

// owns reports whether nginx serves stream id (its file was applied), and
// on how many ports it listens (a range counts each).
func (r *Reconciler) owns(id stream.ID) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ownedIDs[id], r.ownedCount
}

// Status returns the status of stream id at revision rev: pending until a
// pass has applied that revision.
func (r *Reconciler) Status(id stream.ID, rev uint64) stream.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.status[id]
	if !ok || st.Revision != rev {
		return stream.Status{State: stream.Pending, Revision: rev}
	}
	return st
}

// StatusVersion changes whenever a pass records new statuses.
func (r *Reconciler) StatusVersion() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statusVersion
}

// NodeStatus returns what the reconciler knows about itself and nginx.
func (r *Reconciler) NodeStatus() stream.NodeStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.node
	if r.appliedTL == r.timeline() {
		h.AppliedRevision = r.appliedRev // else none yet of the store's revisions now
	}
	if !r.passStarted.IsZero() {
		if d := time.Since(r.passStarted); d > r.cfg.StuckAfter {
			h.Stuck = fmt.Sprintf("reconciler stuck: a pass has been running for %s (more than %s)", d.Round(time.Second), r.cfg.StuckAfter)
		}
	}
	return h
}

// finish records the outcome of a successful pass: every spec is active,
// or failed if quarantined.
func (r *Reconciler) finish(specs []stream.Spec, desired map[string]file, rev uint64) {
	// Nothing to record when neither the store nor a quarantine changed.
	key := [2]uint64{rev, r.quarantineGen}
	if key == r.finished && r.recorded(specs) {
		return
	}
	r.finished = key
	now := time.Now().UTC()
	var changes []events.StatusChange
	defer func() { r.publishStatuses(changes) }() // once r.mu is released
	r.mu.Lock()
	defer r.mu.Unlock()
	status := make(map[stream.ID]stream.Status, len(specs))
	var counts stream.NodeStreams
	var notActive []stream.StreamStatus
	for _, s := range specs {
		st := stream.Status{State: stream.Active, Revision: s.Revision, Since: now}
		if q, ok := r.quarantine[s.ID()]; ok {
			st.State, st.Error = stream.Failed, q.reason
		} else if why, ok := r.unrenderable[s.ID()]; ok {
			st.State, st.Error = stream.Failed, why
		}
		old, ok := r.status[s.ID()]
		if ok && old.State == st.State && old.Error == st.Error {
			st.Since = old.Since
		}
		if r.cfg.Events != nil {
			if c, moved := r.statusChange(s.ID(), old, ok, st); moved {
				changes = append(changes, c)
			}
		}
		status[s.ID()] = st
		if st.State == stream.Active {
			counts.Active++
		} else {
			counts.Failed++
			notActive = append(notActive, stream.StreamStatus{ID: s.ID(), Status: st})
		}
	}
	r.status = status
	r.node.Streams, r.node.NotActive = counts, notActive
	r.statusVersion++
	owned := make(map[stream.ID]bool, len(desired))
	ports := 0
	for _, f := range desired {
		owned[f.spec.ID()] = true
		ports += f.spec.PortCount()
	}
	r.ownedIDs, r.ownedCount = owned, ports
}

// recorded reports whether the statuses are of exactly specs, at their
// revisions. A shard of a Pool sees its list change without the store's
// revision changing (a stream moved to it or away). Called by passes
// only, which alone write r.status.
func (r *Reconciler) recorded(specs []stream.Spec) bool {
	if len(specs) != len(r.status) {
		return false
	}
	for _, s := range specs {
		if st, ok := r.status[s.ID()]; !ok || st.Revision != s.Revision {
			return false
		}
	}
	return true
}

func (r *Reconciler) count(f func(*stream.NodeCounters)) {
	r.mu.Lock()
	f(&r.node.Counters)
	r.mu.Unlock()
}

func sortStrings(s []string) []string {
	slices.Sort(s)
	return s
}
