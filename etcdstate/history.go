package etcdstate

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// A node that did not watch etcd for a while (it was stopped, or etcd did
// not answer) resumes the watch from the revision its copy is complete
// through, and vets what the watch delivers as if it had watched. That
// holds only while etcd's history up to that revision is the one the copy
// came from: etcd restored from an older backup and written past the
// copy's revision since has a revision above the copy's and the same
// cluster id, and its watch never delivers the deletions the restore
// implied. So before it resumes, the node reads etcd's state at its
// copy's revision: the same streams at the same revisions, and the watch
// goes on; others, and it holds (revision_backwards); compacted (etcd no
// longer tells), and it reads the whole state again, which holds when it
// lacks more than half of the node's streams (relistDeletes).

// errNotVetted ends a watch that would deliver before etcd's history was
// compared with the copy's.
var errNotVetted = errors.New("etcd's history since it last answered is not vetted yet")

// errDiverged says etcd's state at the copy's revision is not the copy.
var errDiverged = errors.New("etcd's history differs from the local copy's")

// rechecking says whether the copy must be compared with etcd's history
// before the watch delivers again.
func (s *State) rechecking() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.recheck
}

// sameHistory returns nil when etcd's state at the revision the copy is
// complete through is the copy (stream ids and revisions, and the
// marker's), errDiverged when it is not, errCompactedWatch when etcd no
// longer keeps that revision. The copy does not change meanwhile: the
// caller holds applyMu.
func (s *State) sameHistory(ctx context.Context) error {
	s.mu.RLock()
	through, held := s.hist.through, s.alarm != nil
	s.mu.RUnlock()
	if through == 0 || held {
		return nil
	}
	list, rev, _, err := s.list(ctx, clientv3.WithRev(int64(through)))
	if errors.Is(err, rpctypes.ErrCompacted) {
		return errCompactedWatch
	}
	if err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if rev != s.stateRev || len(list) != len(s.local) {
		return errDiverged
	}
	for _, sp := range list {
		if l, ok := s.local[sp.ID()]; !ok || l.Revision != sp.Revision {
			return errDiverged
		}
	}
	return nil
}

// vetHistory compares etcd's history with the copy (sameHistory) and
// acts on the outcome: nil and the watch may resume from the copy's
// revision; diverged, and the copy is held; compacted, and the state is
// read again (relist). rev and cluster are what etcd answered last.
func (s *State) vetHistory(ctx context.Context, rev int64, cluster uint64) error {
	s.applyMu.Lock()
	err := s.sameHistory(ctx)
	s.applyMu.Unlock()
	switch {
	case err == nil:
		s.vetted()
		return nil
	case errors.Is(err, errDiverged):
		s.raise(s.divergedAlarm(ctx, rev, cluster))
		s.vetted()
		return nil
	case errors.Is(err, errCompactedWatch):
		if err := s.relist(ctx); err != nil {
			return err
		}
		s.vetted()
		return nil
	}
	return fmt.Errorf("compare etcd's history with the local copy: %w", err)
}

func (s *State) vetted() {
	s.mu.Lock()
	s.recheck = false
	s.mu.Unlock()
}

// relist reads the state again over the copy, as a watch past a
// compaction does (load), and has the watch go on from the read.
func (s *State) relist(ctx context.Context) error {
	at, err := s.load(ctx)
	if err != nil {
		return fmt.Errorf("read the state again: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resume = at + 1
	if s.cancelFollow != nil {
		s.cancelFollow()
	}
	return nil
}

// divergedAlarm is the hold of a copy whose revision etcd holds another
// state at: etcd was restored from an older backup and written since.
func (s *State) divergedAlarm(ctx context.Context, rev int64, cluster uint64) *desired.Alarm {
	s.mu.RLock()
	through, own := s.hist.through, s.cluster
	s.mu.RUnlock()
	a := &desired.Alarm{Reason: ReasonBackwards, NodeRevision: through, StoreRevision: uint64(rev),
		NodeClusterID: clusterHex(own), StoreClusterID: clusterHex(cluster)}
	a.Deletes = s.deletesOf(ctx)
	a.Message = fmt.Sprintf("etcd's state at revision %d, which this node applied, is not the one it applied: etcd was restored from an older backup and written since (its revision is %d now)"+
		"; applying its state would delete %d of this node's streams. %s", through, rev, a.Deletes, holdAdvice)
	return a
}

// mine says whether sp is one of this node's streams: every stream when
// the node's name is not known.
func (s *State) mine(sp stream.Spec) bool {
	return s.node == "" || sp.Targets(s.node)
}
