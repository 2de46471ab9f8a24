package etcdstate

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// The guard: a node does not apply a state that went wrong. It holds its
// local copy (forwards what it has, applies nothing of etcd's, refuses
// writes with ErrHeld) when
//
//   - a read's revision is below the revision the copy is complete through
//     (etcd restored from an older backup): revision_backwards;
//   - etcd's cluster id is not the one the copy came from (pointed at
//     another cluster): cluster_changed;
//   - one revision deletes more than half of the node's streams without
//     rewriting the marker, which every write of this API rewrites (so it
//     came from elsewhere, such as etcdctl): mass_deletion. A node that
//     must read the state again (etcd compacted past its revision) cannot
//     see the revisions, so a read that lacks more than half of its
//     streams holds too.
//
// The first two are looked for at every probe (Options.CheckInterval), at
// open, in every List and when a watch that had lost etcd delivers again
// (the client's watch reconnects silently). Confirm writes P/confirm; a
// held node that sees a confirmation newer than its alarm accepts etcd's
// state as it is then, so one confirmation converges every node.

// holdAdvice ends an alarm's message.
const holdAdvice = "This node keeps forwarding what it has and takes no writes; if etcd's state is the one to keep, confirm it (POST /v1/state/confirm, or stream-conductor confirm)"

// Alarm reasons.
const (
	ReasonBackwards    = "revision_backwards"
	ReasonCluster      = "cluster_changed"
	ReasonMassDeletion = "mass_deletion"
)

// Condition says whether reads come from the local copy (stale) and
// whether it is held (alarm).
func (s *State) Condition() desired.Condition {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var c desired.Condition
	if s.alarm != nil {
		a := *s.alarm
		c.Alarm = &a
		c.Stale = &desired.Stale{Since: a.Since, Reason: "held: " + a.Message}
	}
	if s.down != nil {
		d := *s.down
		c.Stale = &d
	}
	return c
}

// frozen says whether reads come from the local copy.
func (s *State) frozen() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.down != nil || s.alarm != nil
}

func (s *State) stale() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.down != nil
}

func (s *State) held() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.alarm != nil
}

// writable is nil when a write may be tried: the copy is not held and
// etcd answered the last probe.
func (s *State) writable(op string) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.alarm != nil:
		return fmt.Errorf("%s: %w: %s", op, desired.ErrHeld, s.alarm.Message)
	case s.down != nil:
		return fmt.Errorf("%s: %w: etcd unreachable since %s: %s", op, desired.ErrUnavailable,
			s.down.Since.UTC().Format(time.RFC3339), strings.TrimPrefix(s.down.Reason, unreachable))
	}
	return nil
}

// unreachable begins the reason of a stale copy.
const unreachable = "etcd unreachable: "

// markDown records that etcd did not answer.
func (s *State) markDown(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	reason := unreachable + err.Error()
	if s.down != nil {
		s.down.Reason = reason
		return
	}
	s.down = &desired.Stale{Since: s.now().UTC(), Reason: reason}
	s.recheck = true // etcd may come back restored from a backup
	s.log.Warn().Err(err).Msg("etcd does not answer: serving reads from the local copy, refusing writes")
}

// markUp records that etcd answered.
func (s *State) markUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down == nil {
		return
	}
	s.log.Info().Time("since", s.down.Since).Msg("etcd answers again")
	s.down = nil
}

// check probes etcd every CheckInterval until ctx ends.
func (s *State) check(ctx context.Context) {
	defer close(s.checkDone)
	t := time.NewTicker(s.checkEvery)
	defer t.Stop()
	for {
		s.probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe reads P/confirm: whether etcd answers, whether its revision and
// cluster id are sound and, when held, whether an operator confirmed.
func (s *State) probe(ctx context.Context) {
	// The request timeout, not less: a slow etcd is not taken for a
	// missing one, which would refuse writes.
	pctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	seen := s.through()
	resp, err := s.cli.Get(pctx, s.confirmKey)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		s.markDown(err)
		return
	}
	s.markUp()
	held := s.vet(ctx, header{rev: resp.Header.Revision, cluster: resp.Header.ClusterId, seen: seen})
	if !held && len(resp.Kvs) > 0 {
		s.sawConfirmation(resp.Kvs[0].ModRevision)
	}
	if !held && s.rechecking() {
		if err := s.vetHistory(ctx, resp.Header.Revision, resp.Header.ClusterId); err != nil {
			s.log.Warn().Err(err).Msg("etcd answers again, but its history could not be compared with the local copy; the watch waits, trying again")
		}
		return
	}
	if !held || len(resp.Kvs) == 0 {
		return
	}
	s.mu.RLock()
	newer := s.alarm != nil && uint64(resp.Kvs[0].ModRevision) > s.alarm.StoreRevision
	s.mu.RUnlock()
	if !newer {
		return
	}
	var c desired.Confirmation
	json.Unmarshal(resp.Kvs[0].Value, &c) // for the log only
	if err := s.accept(ctx); err != nil {
		s.log.Error().Err(err).Msg("an operator confirmed etcd's state, but reading it failed; trying again")
		return
	}
	s.sawConfirmation(resp.Kvs[0].ModRevision)
	s.log.Warn().Str("by", c.By).Time("at", c.At).Msg("an operator confirmed etcd's state: applied it as it is")
}

// vet raises the alarm when hdr shows etcd went back in revision or is
// another cluster than the copy's; it says whether the copy is held.
func (s *State) vet(ctx context.Context, hdr header) bool {
	s.mu.Lock()
	if s.alarm != nil {
		s.mu.Unlock()
		return true
	}
	if s.cluster == 0 && len(s.local) == 0 && s.hist.through == 0 {
		s.mu.Unlock()
		return false // nothing to compare with yet
	}
	through, cluster := hdr.seen, s.cluster
	s.mu.Unlock()
	a := &desired.Alarm{NodeRevision: through, StoreRevision: uint64(hdr.rev),
		NodeClusterID: clusterHex(cluster), StoreClusterID: clusterHex(hdr.cluster)}
	switch {
	case cluster != 0 && hdr.cluster != cluster:
		a.Reason = ReasonCluster
		a.Message = fmt.Sprintf("etcd is another cluster (id %s) than the one this node's state came from (id %s): ETCD_ENDPOINTS may name the wrong cluster", a.StoreClusterID, a.NodeClusterID)
	case uint64(hdr.rev) < through:
		a.Reason = ReasonBackwards
		a.Message = fmt.Sprintf("etcd's revision %d is below %d, which this node already applied: etcd was restored from an older backup", hdr.rev, through)
	default:
		return false
	}
	a.Deletes = s.deletesOf(ctx)
	a.Message += fmt.Sprintf("; applying its state would delete %d of this node's streams. This node keeps forwarding what it has and takes no writes; if etcd's state is the one to keep, confirm it (POST /v1/state/confirm, or stream-conductor confirm)", a.Deletes)
	s.raise(a)
	return true
}

// deletesOf counts the local copy's streams etcd does not hold (-1 when
// etcd cannot be read).
func (s *State) deletesOf(ctx context.Context) int {
	lctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Get(lctx, s.marker+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return -1
	}
	in := make(map[stream.ID]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if id, ok := s.idOf(kv.Key); ok {
			in[id] = true
		}
	}
	lapsed := s.lapsed()
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for id, sp := range s.local {
		if !in[id] && s.mine(sp) && !lapsed[id] {
			n++
		}
	}
	return n
}

// massDeletion returns the events up to the first revision that deletes
// more than half of the node's streams of the copy (those that target it)
// without rewriting the marker, and the alarm for that revision (nil:
// none does). A stream whose deadline passed is not counted: etcd's
// lease deletes it so (expiry.go).
func (s *State) massDeletion(events []*clientv3.Event) ([]*clientv3.Event, *desired.Alarm) {
	ours, lapsed := s.ours(), s.lapsed()
	n := len(ours)
	for i := 0; i < len(events); {
		rev := events[i].Kv.ModRevision
		j, deletes, marker := i, 0, false
		for ; j < len(events) && events[j].Kv.ModRevision == rev; j++ {
			ev := events[j]
			id, isStream := s.idOf(ev.Kv.Key)
			switch {
			case string(ev.Kv.Key) == s.marker:
				marker = true
			case !isStream:
			case ev.Type == clientv3.EventTypeDelete:
				if ours[id] && !lapsed[id] {
					deletes++
				}
			case ev.Kv.CreateRevision == ev.Kv.ModRevision && s.putMine(ev):
				n++
			}
		}
		if !marker && deletes > 0 && 2*deletes > n {
			s.mu.RLock()
			through, cluster := s.hist.through, s.cluster
			s.mu.RUnlock()
			return events[:i], &desired.Alarm{Reason: ReasonMassDeletion, NodeRevision: through, StoreRevision: uint64(rev),
				NodeClusterID: clusterHex(cluster), StoreClusterID: clusterHex(cluster), Deletes: deletes,
				Message: fmt.Sprintf("etcd revision %d deletes %d of this node's %d streams and did not come through the stream-conductor API. "+
					"This node keeps forwarding what it has and takes no writes; if the deletion is wanted, confirm it (POST /v1/state/confirm, or stream-conductor confirm)", rev, deletes, n)}
		}
		for k := i; k < j; k++ {
			s.track(ours, events[k])
		}
		n = len(ours)
		i = j
	}
	return events, nil
}

// ours is the set of the copy's streams that are this node's.
func (s *State) ours() map[stream.ID]bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ours := make(map[stream.ID]bool, len(s.local))
	for id, sp := range s.local {
		if s.mine(sp) {
			ours[id] = true
		}
	}
	return ours
}

// track updates ours, the node's streams, by ev.
func (s *State) track(ours map[stream.ID]bool, ev *clientv3.Event) {
	id, ok := s.idOf(ev.Kv.Key)
	switch {
	case !ok:
	case ev.Type == clientv3.EventTypeDelete || !s.putMine(ev):
		delete(ours, id)
	default:
		ours[id] = true
	}
}

// putMine says whether the stream a put event stores is this node's.
func (s *State) putMine(ev *clientv3.Event) bool {
	if s.node == "" {
		return true
	}
	var t struct {
		Nodes []string `json:"nodes"`
	}
	json.Unmarshal(ev.Kv.Value, &t) // a spec that does not decode fails in applyEvents
	return (stream.Spec{Nodes: t.Nodes}).Targets(s.node)
}

// relistDeletes is the alarm for a list, read again over the local copy
// (etcd compacted past the watch), that lacks more than half of the
// copy's streams; nil when it does not.
func (s *State) relistDeletes(list []stream.Spec, hdr header) *desired.Alarm {
	in := make(map[stream.ID]bool, len(list))
	for _, sp := range list {
		in[sp.ID()] = true
	}
	lapsed := s.lapsed()
	s.mu.RLock()
	defer s.mu.RUnlock()
	n, missing := 0, 0
	for id, sp := range s.local {
		if !s.mine(sp) {
			continue
		}
		n++
		if !in[id] && !lapsed[id] {
			missing++
		}
	}
	if missing == 0 || 2*missing <= n {
		return nil
	}
	return &desired.Alarm{Reason: ReasonMassDeletion, NodeRevision: hdr.seen, StoreRevision: uint64(hdr.rev),
		NodeClusterID: clusterHex(s.cluster), StoreClusterID: clusterHex(hdr.cluster), Deletes: missing,
		Message: fmt.Sprintf("etcd no longer holds %d of this node's %d streams, and it compacted the revisions since %d, so whether they were deleted through the stream-conductor API cannot be told. "+
			"This node keeps forwarding what it has and takes no writes; if the deletion is wanted, confirm it (POST /v1/state/confirm, or stream-conductor confirm)", missing, n, hdr.seen)}
}

// raise holds the copy, once, and logs why.
func (s *State) raise(a *desired.Alarm) {
	s.mu.Lock()
	if s.alarm != nil {
		s.mu.Unlock()
		return
	}
	a.Since = s.now().UTC()
	s.alarm = a
	s.mu.Unlock()
	if s.cache != nil {
		if err := s.cache.hold(a); err != nil {
			s.log.Error().Err(err).Msg("the hold could not be recorded in the local copy's file; a restart would not keep it")
		}
	}
	s.log.Error().Str("reason", a.Reason).Uint64("node_revision", a.NodeRevision).Uint64("etcd_revision", a.StoreRevision).
		Str("node_cluster_id", a.NodeClusterID).Str("etcd_cluster_id", a.StoreClusterID).Int("deletes", a.Deletes).
		Msg("holding the desired state: " + a.Message)
	s.notify()
}

// accept reads etcd's state and makes it the local copy, clears the
// alarm, forgets the history (consumers list again) and this State's
// writes, and has the watch go on from the read.
func (s *State) accept(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	list, rev, hdr, err := s.list(lctx)
	if err != nil {
		return fmt.Errorf("accept etcd's state: %w", err)
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.gen.Add(1) // deliveries of the watch that read the old state are dropped
	s.mu.RLock()
	forgotten := max(s.hist.through, s.hist.forgotten)
	s.mu.RUnlock()
	s.installLocked(list, rev, hdr)
	s.timeline.Add(1) // after the copy: whoever sees the new timeline lists the new state
	s.written.Store(0)
	if s.cache != nil {
		if err := s.cache.hold(nil); err != nil {
			s.log.Error().Err(err).Msg("the end of the hold could not be recorded in the local copy's file; a restart would hold again until confirmed")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if forgotten > uint64(hdr.rev) {
		s.hist.forgotten = forgotten
	}
	s.alarm, s.recheck = nil, false
	s.resume = hdr.rev + 1
	if s.cancelFollow != nil {
		s.cancelFollow()
	}
	return nil
}

// Epoch is the etcd revision of the newest confirmation (P/confirm) this
// node's state is of: the one it accepted, or, while it holds nothing, the
// newest it has seen. Nodes publish it with their applied revision, which
// is compared with another node's only within one epoch.
func (s *State) Epoch() uint64 { return s.epoch.Load() }

// sawConfirmation records the revision of a confirmation seen while the
// copy is not held (a held node takes it on when it accepts).
func (s *State) sawConfirmation(rev int64) {
	for {
		cur := s.epoch.Load()
		if uint64(rev) <= cur || s.epoch.CompareAndSwap(cur, uint64(rev)) {
			return
		}
	}
}

// Timeline changes (grows) when an operator's confirmation replaced the
// local copy with etcd's state as it is: revisions after it may be lower
// than before (etcd restored from an older backup), so a consumer compares
// revisions only within one timeline (reconcile.Timelined).
func (s *State) Timeline() uint64 { return s.timeline.Load() }

// Confirm records an operator's word that etcd's state is to be applied
// as it is (P/confirm), and applies it here at once if this node holds;
// every other held node applies it at its next probe. It passes while the
// node holds, not while etcd does not answer.
func (s *State) Confirm(ctx context.Context, by string) (desired.Confirmation, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cur, err := s.cli.Get(ctx, s.confirmKey)
	if err != nil {
		return desired.Confirmation{}, fmt.Errorf("confirm: %w", unavailable("read", err))
	}
	c := desired.Confirmation{By: by, At: s.now().UTC(), ClusterID: clusterHex(cur.Header.ClusterId), Revision: uint64(cur.Header.Revision)}
	v, err := json.Marshal(c)
	if err != nil {
		return c, fmt.Errorf("confirm: %w", err)
	}
	put, err := s.cli.Put(ctx, s.confirmKey, string(v))
	if err != nil {
		return c, fmt.Errorf("confirm: %w", unavailable("write", err))
	}
	s.mu.RLock()
	held := s.alarm != nil && uint64(put.Header.Revision) > s.alarm.StoreRevision
	s.mu.RUnlock()
	if held {
		if err := s.accept(ctx); err != nil {
			return c, fmt.Errorf("confirm: %w", err)
		}
		s.log.Warn().Str("by", by).Msg("an operator confirmed etcd's state: applied it as it is")
	}
	if !s.held() {
		s.sawConfirmation(put.Header.Revision)
	}
	return c, nil
}

func clusterHex(id uint64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatUint(id, 16)
}
