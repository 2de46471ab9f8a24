package etcdstate

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// history is the changes the watch delivered (see desired.History), and
// the etcd revision it delivered through.
type history struct {
	desired.History
	through uint64
	// forgotten, after an operator's confirmation replaced a copy that
	// was complete through a higher revision than etcd's, is that
	// revision: Since after a revision above through and up to it was
	// asked by a consumer of the replaced copy, which must list again.
	forgotten uint64
}

// add records changes delivered through revision rev.
func (h *history) add(changes []desired.Change, rev uint64) {
	h.Add(changes...)
	h.through = max(h.through, rev)
}

// Since returns the changes after revision after, as the watch delivered
// them, or ErrCompacted when they are older than the state's opening or
// than the last desired.HistorySize changes. It first waits (up to the request
// timeout) until the watch delivered this State's own writes, so a
// change written here is in the answer once its write returned.
func (s *State) Since(after uint64) ([]desired.Change, error) {
	if err := s.caughtUp(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if after > s.hist.through && after <= s.hist.forgotten {
		return nil, fmt.Errorf("changes after %d: the state was replaced by an operator's confirmation at etcd revision %d: %w",
			after, s.hist.through, desired.ErrCompacted)
	}
	return s.hist.Since(after)
}

// caughtUp waits until the watch delivered the revision of this State's
// last write.
func (s *State) caughtUp() error {
	want := s.written.Load()
	var deadline <-chan time.Time
	for {
		s.mu.RLock()
		through, updated := s.hist.through, s.updated
		s.mu.RUnlock()
		if through >= want {
			return nil
		}
		if deadline == nil {
			t := time.NewTimer(s.timeout)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-updated:
		case <-deadline:
			return fmt.Errorf("changes: the etcd watch has not delivered revision %d within %s (it is at %d): %w",
				want, s.timeout, through, desired.ErrUnavailable)
		}
	}
}

// Updated returns a channel closed when the watch next delivers changes.
// Take it before calling Since, and no change is missed. It first waits
// (up to the request timeout) until the watch delivered this State's own
// writes, so that the channel is not closed by a write that returned
// before it was taken.
func (s *State) Updated() <-chan struct{} {
	if err := s.caughtUp(); err != nil {
		s.log.Warn().Err(err).Msg("the watch lags behind this node's writes")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.updated
}

// watch follows the state's keys from revision from until ctx ends. When
// etcd compacted past the revision it needs, it starts again from the
// current one and forgets the history before it (Since says so). When an
// operator's confirmation replaced the local copy (accept), it goes on
// from the revision that copy was read at.
func (s *State) watch(ctx context.Context, from int64) {
	defer close(s.watchDone)
	for backoff := 50 * time.Millisecond; ctx.Err() == nil; backoff = min(2*backoff, 5*time.Second) {
		fctx, cancel := context.WithCancel(ctx)
		s.mu.Lock()
		if s.resume != 0 {
			from, s.resume = s.resume, 0
		}
		s.cancelFollow = cancel
		s.mu.Unlock()
		next, err := s.follow(fctx, from, s.gen.Load())
		cancel()
		if next > from {
			from, backoff = next, 50*time.Millisecond
		}
		if ctx.Err() != nil {
			return
		}
		if s.resuming() {
			continue
		}
		if errors.Is(err, errCompactedWatch) {
			if from, err = s.restart(ctx); err == nil {
				continue
			}
		}
		s.log.Warn().Err(err).Int64("from", from).Dur("retry_in", backoff).
			Msg("the etcd watch of the desired state ended; watching again")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// resuming says whether accept set the revision to watch from.
func (s *State) resuming() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.resume != 0
}

var errCompactedWatch = fmt.Errorf("etcd compacted the revisions the watch needs: %w", desired.ErrCompacted)

// follow delivers the watch's events from revision from until it ends, and
// returns the revision to resume from. Nothing is delivered while the
// local copy is held, nor after it was replaced since gen.
func (s *State) follow(ctx context.Context, from int64, gen uint64) (int64, error) {
	wctx := clientv3.WithRequireLeader(ctx)
	for resp := range s.cli.Watch(wctx, s.marker, clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if resp.CompactRevision != 0 {
			return from, errCompactedWatch
		}
		if err := resp.Err(); err != nil {
			return from, err
		}
		if len(resp.Events) == 0 {
			continue
		}
		if s.stale() || s.rechecking() {
			s.probe(ctx) // a watch that reconnected: vet etcd before applying
		}
		if s.held() {
			continue
		}
		if s.rechecking() {
			return from, errNotVetted
		}
		gone, err := s.deliver(resp.Events, gen)
		if err != nil {
			return from, err
		}
		s.recordLeaseExpiries(ctx, gone)
		from = resp.Events[len(resp.Events)-1].Kv.ModRevision + 1
	}
	return from, ctx.Err()
}

// deliver applies events to the local copy and its file, then tells
// consumers; a revision that deletes more than half of the streams
// without rewriting the marker (not a write of this API) is held, not
// applied, and nothing after it either. It returns the streams it
// applied the deletion of by etcd's lease (expiry.go).
func (s *State) deliver(events []*clientv3.Event, gen uint64) ([]stream.Spec, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if s.gen.Load() != gen || s.held() {
		return nil, nil
	}
	keep, alarm := s.massDeletion(events)
	var gone []stream.Spec
	if len(keep) > 0 {
		gone = s.leaseExpired(keep)
		if err := s.applyEvents(keep); err != nil {
			return nil, err
		}
	}
	if alarm != nil {
		s.raise(alarm)
	}
	return gone, nil
}

// applyEvents records events in the file, then in memory, then tells
// consumers.
func (s *State) applyEvents(events []*clientv3.Event) error {
	changes, err := s.changes(events)
	if err != nil {
		return err
	}
	last := uint64(events[len(events)-1].Kv.ModRevision)
	s.mu.RLock()
	stateRev, cluster := s.stateRev, s.cluster
	s.mu.RUnlock()
	for _, ev := range events {
		_, isStream := s.idOf(ev.Kv.Key)
		switch {
		case string(ev.Kv.Key) == s.marker && ev.Type == clientv3.EventTypePut:
			stateRev = uint64(ev.Kv.ModRevision)
		case isStream && ev.Type == clientv3.EventTypeDelete:
			// etcd's lease (expiry.go) deletes without the marker: the
			// state changed all the same.
			stateRev = max(stateRev, uint64(ev.Kv.ModRevision))
		}
	}
	if s.cache != nil {
		if err := s.cache.apply(changes, last, stateRev, cluster); err != nil {
			s.log.Error().Err(err).Msg("the local copy's file could not be written; a restart while etcd is unreachable would start from an older copy")
		}
	}
	s.mu.Lock()
	s.hist.add(changes, last)
	s.stateRev = stateRev
	for _, c := range changes {
		if c.Spec == nil {
			delete(s.local, c.ID)
		} else {
			s.local[c.ID] = *c.Spec
		}
	}
	close(s.updated)
	s.updated = make(chan struct{})
	s.mu.Unlock()
	s.notify()
	return nil
}

// changes are the stream changes of events (the marker's are left out).
func (s *State) changes(events []*clientv3.Event) ([]desired.Change, error) {
	out := make([]desired.Change, 0, len(events))
	for _, ev := range events {
		id, ok := s.idOf(ev.Kv.Key)
		if !ok {
			continue
		}
		c := desired.Change{Revision: uint64(ev.Kv.ModRevision), ID: id}
		if ev.Type == clientv3.EventTypePut {
			sp, err := decode(ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
			if err != nil {
				return nil, err
			}
			c.Spec = &sp
		}
		out = append(out, c)
	}
	return out, nil
}

// restart reads the state again into the local copy and returns the
// revision to watch from: the state's revision now becomes the oldest
// Since answers after.
func (s *State) restart(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	at, err := s.load(rctx)
	if err != nil {
		return 0, fmt.Errorf("watch again: %w", err)
	}
	s.log.Warn().Int64("revision", at).
		Msg("etcd compacted past the watch: the state was read again, changes before it are forgotten")
	return at + 1, nil
}

// Changes delivers a value after the watch delivered changes, whichever
// node made them (the reconciler's trigger). Sends never block and
// coalesce: one receive may stand for many changes. It has one consumer.
func (s *State) Changes() <-chan struct{} { return s.changed }

func (s *State) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}
