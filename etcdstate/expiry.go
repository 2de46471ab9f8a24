package etcdstate

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// Expiring streams in a fleet. Every node's write path deletes a stream
// at its deadline (writes.RunExpiry), through Delete, which rewrites the
// marker; the node whose delete goes through records the audit entry. So
// that a stream expires even when every node is down then, a write of a
// stream with a deadline puts its key (and its range index entry) under
// an etcd lease of its own that runs out leaseGrace after the deadline:
// etcd deletes them by itself. A renew or a replace is a new lease,
// granted before the write and put in its transaction (a lease cannot be
// extended past the TTL it was granted); the replaced key's lease, which
// no key uses any more, is revoked, and so is the lease of a write that
// did not go through.
//
// etcd's deletion of an expired key does not rewrite the marker. A node
// that watches it (or reads it back from its local copy after a restart)
//   - counts its revision as the state's (so that consumers see it),
//   - does not take it for a mass deletion (guard.go): the stream's
//     deadline had passed,
//   - records the audit entry, once per fleet: the node whose transaction
//     creates P/expired/<id>@<revision> first writes it.

// leaseGrace is how long a stream's lease outlives its deadline: a
// running node's timer deletes it first (with its audit entry); etcd's
// lease only when none ran.
const leaseGrace = time.Second

// lapseSkew is how far ahead of this node's clock a deadline may be and
// still count as passed when etcd deletes its stream (other nodes' and
// etcd's clocks differ from this one's).
const lapseSkew = 5 * time.Second

// claimTTL is how long the claim of a lease expiry's audit entry is kept.
const claimTTL = 24 * 60 * 60 // seconds

// leaseTTL is the TTL, in whole seconds, of the lease of a stream whose
// deadline is at, granted at now: the time left, plus leaseGrace,
// rounded up.
func leaseTTL(at, now time.Time) int64 {
	left := at.Sub(now) + leaseGrace
	return max(1, int64(math.Ceil(left.Seconds())))
}

// grant returns a new lease for sp's deadline; 0 (no lease) when sp does
// not expire.
func (s *State) grant(ctx context.Context, sp stream.Spec) (clientv3.LeaseID, error) {
	if !sp.Expires() {
		return 0, nil
	}
	resp, err := s.cli.Grant(ctx, leaseTTL(*sp.ExpiresAt, s.now()))
	if err != nil {
		return 0, unavailable("grant the lease of "+sp.ID().String(), err)
	}
	return resp.ID, nil
}

// revoke ends leases no key uses any more (0 is none). A failure is
// logged, not returned: the lease then runs out by itself, deleting
// nothing.
func (s *State) revoke(leases ...clientv3.LeaseID) {
	for _, l := range leases {
		if l == clientv3.NoLease {
			continue
		}
		ctx, cancel := s.ctx()
		_, err := s.cli.Revoke(ctx, l)
		cancel()
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.log.Warn().Err(err).Int64("lease", int64(l)).Msg("revoking a lease no stream uses failed; it runs out by itself")
		}
	}
}

// prevLeases are the leases of the keys a successful transaction replaced
// or deleted (those of its operations made WithPrevKV), each once.
func prevLeases(resp *clientv3.TxnResponse) []clientv3.LeaseID {
	var out []clientv3.LeaseID
	add := func(l int64) {
		for _, o := range out {
			if int64(o) == l {
				return
			}
		}
		if l != 0 {
			out = append(out, clientv3.LeaseID(l))
		}
	}
	for _, r := range resp.Responses {
		if p := r.GetResponsePut(); p != nil && p.PrevKv != nil {
			add(p.PrevKv.Lease)
		}
		if d := r.GetResponseDeleteRange(); d != nil {
			for _, kv := range d.PrevKvs {
				add(kv.Lease)
			}
		}
	}
	return out
}

// lapsed is the set of the local copy's streams whose deadline passed
// (within lapseSkew): etcd's lease may delete them.
func (s *State) lapsed() map[stream.ID]bool {
	at := s.now().Add(lapseSkew)
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[stream.ID]bool{}
	for id, sp := range s.local {
		if sp.Expired(at) {
			out[id] = true
		}
	}
	return out
}

// leaseExpired are the streams of the local copy that events delete in a
// revision that does not rewrite the marker (not a write of this API)
// and whose deadline had passed: etcd's lease deleted them. Call it
// before the events are applied.
func (s *State) leaseExpired(events []*clientv3.Event) []stream.Spec {
	var out []stream.Spec
	lapsed := s.lapsed()
	if len(lapsed) == 0 {
		return nil
	}
	byMarker := map[int64]bool{}
	for _, ev := range events {
		if string(ev.Kv.Key) == s.marker {
			byMarker[ev.Kv.ModRevision] = true
		}
	}
	for _, ev := range events {
		id, ok := s.idOf(ev.Kv.Key)
		if !ok || ev.Type != clientv3.EventTypeDelete || byMarker[ev.Kv.ModRevision] || !lapsed[id] {
			continue
		}
		if sp, ok := s.Local(id); ok {
			out = append(out, sp)
		}
	}
	return out
}

// recordLeaseExpiries appends the audit entry of each stream etcd's lease
// deleted, unless another node (or this one, before a restart) claimed
// it first.
func (s *State) recordLeaseExpiries(ctx context.Context, gone []stream.Spec) {
	for _, sp := range gone {
		won, err := s.claimExpiry(ctx, sp)
		if err != nil {
			s.log.Warn().Err(err).Stringer("stream", sp.ID()).Msg("etcd's lease deleted an expired stream; its audit entry could not be claimed, so none is written here")
			continue
		}
		if !won {
			continue
		}
		s.log.Info().Stringer("stream", sp.ID()).Time("expires_at", *sp.ExpiresAt).Msg("expired: etcd's lease deleted it")
		if err := s.AppendAudit(desired.ExpiredRecord(sp, s.now(), "deleted by etcd's lease: no node deleted it in time")); err != nil {
			s.log.Error().Err(err).Stringer("stream", sp.ID()).Msg("audit log: an expiry by etcd's lease")
		}
	}
}

// claimExpiry creates P/expired/<id>@<revision> if it does not exist,
// under a lease of claimTTL, and says whether this call created it.
func (s *State) claimExpiry(ctx context.Context, sp stream.Spec) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	l, err := s.cli.Grant(rctx, claimTTL)
	if err != nil {
		return false, unavailable("claim an expiry", err)
	}
	key := s.prefix + "/expired/" + sp.ID().String() + "@" + strconv.FormatUint(sp.Revision, 10)
	resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, s.node, clientv3.WithLease(l.ID))).Commit()
	if err != nil {
		s.revoke(l.ID)
		return false, unavailable("claim an expiry", err)
	}
	if !resp.Succeeded {
		s.revoke(l.ID)
	}
	return resp.Succeeded, nil
}
