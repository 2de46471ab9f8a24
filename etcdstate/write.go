package etcdstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// stamp is sp as stored over cur (nil: a create): its times set, its
// revision left to etcd.
func (s *State) stamp(sp stream.Spec, cur *stream.Spec) stream.Spec {
	sp = sp.Clone()
	now := s.now().UTC()
	sp.Revision, sp.UpdatedAt, sp.CreatedAt = 0, now, now
	if cur != nil {
		sp.CreatedAt = cur.CreatedAt
	}
	return sp
}

// putOp is the operation that stores sp under lease (0: none; see
// expiry.go), returning the key's previous value (its lease).
func (s *State) putOp(sp stream.Spec, lease clientv3.LeaseID) (clientv3.Op, error) {
	v, err := json.Marshal(sp)
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(s.key(sp.ID()), string(v), clientv3.WithLease(lease), clientv3.WithPrevKV()), nil
}

// mayHaveApplied reports whether a transaction that failed with err may
// still have been applied by etcd: it was sent and its answer lost (a
// timeout, a connection cut). Its leases must not be revoked then, which
// would delete the keys it wrote: each runs out by itself a second after
// its stream's deadline.
func mayHaveApplied(err error) bool {
	return err != nil && !errors.Is(err, rpctypes.ErrTooManyOps)
}

// commit runs ops and the marker's rewrite if cmps hold, and returns
// whether they held, the revision of the write and the leases of the
// keys it replaced or deleted.
func (s *State) commit(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (bool, int64, []clientv3.LeaseID, error) {
	ops = append(ops, clientv3.OpPut(s.marker, ""))
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return false, 0, nil, fmt.Errorf("a transaction of %d operations: raise etcd's --max-txn-ops: %w", len(ops), err)
	case err != nil:
		return false, 0, nil, unavailable("write", err)
	case !resp.Succeeded:
		return false, 0, nil, nil
	}
	s.wrote(resp.Header.Revision)
	return true, resp.Header.Revision, prevLeases(resp), nil
}

// Put creates or replaces sp if m holds. It checks m against the stream
// as the local copy has it and writes if the key was not modified since;
// a transaction that finds it modified (or a check that fails on the
// local copy) goes on with the stream as etcd has it, which the lost
// transaction read: a write whose local copy is current is one request.
func (s *State) Put(sp stream.Spec, m desired.Match) (stream.Spec, *stream.Spec, error) {
	id := sp.ID()
	if err := s.writable("put " + id.String()); err != nil {
		return stream.Spec{}, nil, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	lease, err := s.grant(ctx, sp)
	if err != nil {
		return stream.Spec{}, nil, fmt.Errorf("put %s: %w", id, err)
	}
	used := false
	defer func() {
		if !used {
			s.revoke(lease)
		}
	}()
	cur := s.localCurrent(id)
	for attempt := range maxAttempts {
		err := m.Check(cur.spec)
		if err != nil {
			if !cur.fromEtcd {
				if cur, err = s.current(ctx, id); err != nil {
					return stream.Spec{}, nil, fmt.Errorf("put %s: %w", id, err)
				}
				continue
			}
			return stream.Spec{}, nil, fmt.Errorf("put %s: %w", id, err)
		}
		var check portCheck
		if needsPortCheck(sp, cur.spec) {
			if check, err = s.portsFree(ctx, sp, attempt); err != nil {
				return stream.Spec{}, nil, fmt.Errorf("put %s: %w", id, err)
			}
		}
		stored := s.stamp(sp, cur.spec)
		op, err := s.putOp(stored, lease)
		if err != nil {
			return stream.Spec{}, nil, fmt.Errorf("put %s: %w", id, err)
		}
		ops := append([]clientv3.Op{op}, s.indexOps(id, &stored, cur.spec, lease)...)
		ok, rev, now, prev, err := s.commitIfUnmodified(ctx, id, cur.modRev, check.cmps(), ops...)
		if err != nil {
			used = mayHaveApplied(err)
			return stream.Spec{}, nil, fmt.Errorf("put %s: %w", id, err)
		}
		if ok {
			used = true
			s.revoke(prev...)
			stored.Revision = uint64(rev)
			return stored, cur.spec, nil
		}
		cur = now
	}
	return stream.Spec{}, nil, fmt.Errorf("put %s: %w", id, errContention)
}

// Delete removes the stream with id if m holds, and returns it with the
// revision of the delete; like Put, it starts from the local copy.
func (s *State) Delete(id stream.ID, m desired.Match) (stream.Spec, uint64, error) {
	if err := s.writable("delete " + id.String()); err != nil {
		return stream.Spec{}, 0, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	cur := s.localCurrent(id)
	for range maxAttempts {
		err := m.Check(cur.spec)
		if cur.spec == nil {
			err = desired.ErrNotFound
		}
		if err != nil {
			if !cur.fromEtcd {
				if cur, err = s.current(ctx, id); err != nil {
					return stream.Spec{}, 0, fmt.Errorf("delete %s: %w", id, err)
				}
				continue
			}
			return stream.Spec{}, 0, fmt.Errorf("delete %s: %w", id, err)
		}
		ops := append([]clientv3.Op{clientv3.OpDelete(s.key(id), clientv3.WithPrevKV())}, s.indexOps(id, nil, cur.spec, 0)...)
		ok, rev, now, prev, err := s.commitIfUnmodified(ctx, id, cur.modRev, nil, ops...)
		if err != nil {
			return stream.Spec{}, 0, fmt.Errorf("delete %s: %w", id, err)
		}
		if ok {
			s.revoke(prev...)
			return *cur.spec, uint64(rev), nil
		}
		cur = now
	}
	return stream.Spec{}, 0, fmt.Errorf("delete %s: %w", id, errContention)
}

// currentSpec is a stream as a write found it: its spec (nil: none), its
// key's modification revision (0: none), and whether etcd said so (else
// the local copy did).
type currentSpec struct {
	spec     *stream.Spec
	modRev   int64
	fromEtcd bool
}

// localCurrent is the stream with id as the local copy has it.
func (s *State) localCurrent(id stream.ID) currentSpec {
	sp, ok := s.Local(id)
	if !ok {
		return currentSpec{}
	}
	return currentSpec{spec: &sp, modRev: int64(sp.Revision)}
}

// current is the stream with id as etcd has it.
func (s *State) current(ctx context.Context, id stream.ID) (currentSpec, error) {
	sp, modRev, err := s.get(ctx, id)
	return currentSpec{spec: sp, modRev: modRev, fromEtcd: true}, err
}

// commitIfUnmodified commits ops (and the marker's rewrite) if the key of
// id is at modification revision modRev (0: absent) and the comparisons
// extra hold, and returns the leases of the keys it replaced or deleted;
// otherwise it returns the stream as etcd has it now, read in the same
// transaction.
func (s *State) commitIfUnmodified(ctx context.Context, id stream.ID, modRev int64, extra []clientv3.Cmp, ops ...clientv3.Op) (bool, int64, currentSpec, []clientv3.LeaseID, error) {
	key := s.key(id)
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", modRev)}, extra...)
	resp, err := s.cli.Txn(ctx).If(cmps...).
		Then(append(ops, clientv3.OpPut(s.marker, ""))...).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return false, 0, currentSpec{}, nil, unavailable("write", err)
	}
	if resp.Succeeded {
		s.wrote(resp.Header.Revision)
		return true, resp.Header.Revision, currentSpec{}, prevLeases(resp), nil
	}
	now := currentSpec{fromEtcd: true}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		sp, err := decode(kvs[0].Key, kvs[0].Value, kvs[0].ModRevision)
		if err != nil {
			return false, 0, currentSpec{}, nil, err
		}
		now.spec, now.modRev = &sp, kvs[0].ModRevision
	}
	return false, 0, now, nil, nil
}

// Allocate stores sp on a port in [lo, hi] that has no stream of sp's
// protocol and that busy (if not nil) does not report: the first such
// port when no other allocation runs. It reads the ports taken, then
// tries a free one with a transaction that creates the key only if it
// does not exist, so that two nodes never get the same port. A
// transaction lost to a concurrent allocator reads the ports taken again
// in its Else branch. Under contention (other allocations under way here,
// or a lost transaction) the try picks at random among the first free
// ports (see spread), so that concurrent allocators spread over the range
// instead of all trying the same next port: n of them send about 2n
// transactions, not n²/2. Each request has the request timeout; the whole
// allocation has Options.AllocateTimeout.
func (s *State) Allocate(sp stream.Spec, lo, hi int, busy func(port int) bool) (stream.Spec, error) {
	if err := s.writable("allocate " + string(sp.Protocol) + " port"); err != nil {
		return stream.Spec{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.allocateTimeout)
	defer cancel()
	taken, rev, err := s.taken(ctx, sp.Protocol)
	if err != nil {
		return stream.Spec{}, fmt.Errorf("allocate %s port in %d-%d: %w", sp.Protocol, lo, hi, err)
	}
	lease, err := s.grant(ctx, sp)
	if err != nil {
		return stream.Spec{}, fmt.Errorf("allocate %s port in %d-%d: %w", sp.Protocol, lo, hi, err)
	}
	used := false
	defer func() {
		if !used {
			s.revoke(lease)
		}
	}()
	s.allocating.Add(1)
	defer s.allocating.Add(-1)
	for losses := range maxAttempts {
		port, ok := pickPort(taken, lo, hi, busy, spread(losses, int(s.allocating.Load())))
		if !ok {
			return stream.Spec{}, fmt.Errorf("allocate %s port in %d-%d: %w", sp.Protocol, lo, hi, desired.ErrNoFreePort)
		}
		sp.Listen = port
		stored, won, now, nowRev, err := s.claimPort(ctx, sp, rev, lease)
		if err != nil {
			used = mayHaveApplied(err)
			return stream.Spec{}, fmt.Errorf("allocate %s (after %d ports went to concurrent allocators): %w", sp.ID(), losses, err)
		}
		if won {
			used = true
			return stored, nil
		}
		taken, rev = now, nowRev
		taken[port] = true // gone meanwhile or not, it was just taken
	}
	return stream.Spec{}, fmt.Errorf("allocate %s port in %d-%d: %w", sp.Protocol, lo, hi, errContention)
}

// claimPort stores sp (under lease, 0: none) if its key does not exist
// and no range took its port since revision rev (when taken was read);
// otherwise it returns the ports of sp's protocol taken now, read in the
// same transaction, and the revision of that read.
func (s *State) claimPort(ctx context.Context, sp stream.Spec, rev int64, lease clientv3.LeaseID) (stream.Spec, bool, map[int]bool, int64, error) {
	stored := s.stamp(sp, nil)
	op, err := s.putOp(stored, lease)
	if err != nil {
		return stream.Spec{}, false, nil, 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	s.allocTxns.Add(1)
	ranges := portCheck{spans: portSpans(s.rangePrefix(), sp.Protocol, sp.Listen-stream.MaxRangePorts+1, sp.Listen), rev: rev}
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.key(sp.ID())), "=", 0)}, ranges.cmps()...)
	resp, err := s.cli.Txn(rctx).If(cmps...).
		Then(op, clientv3.OpPut(s.marker, "")).
		Else(clientv3.OpGet(s.protocolPrefix(sp.Protocol), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
			clientv3.OpGet(s.rangePrefix()+string(sp.Protocol)+"/", clientv3.WithPrefix())).Commit()
	if err != nil {
		return stream.Spec{}, false, nil, 0, unavailable("write", err)
	}
	if resp.Succeeded {
		s.wrote(resp.Header.Revision)
		stored.Revision = uint64(resp.Header.Revision)
		return stored, true, nil, 0, nil
	}
	taken := s.portsOf(resp.Responses[0].GetResponseRange().Kvs)
	s.coveredPorts(taken, resp.Responses[1].GetResponseRange().Kvs, sp.Protocol)
	return stream.Spec{}, false, taken, resp.Header.Revision, nil
}

// spread is how many of the first free ports an allocator picks among
// after losses lost transactions while this State runs allocating
// allocations: one (the first free port) when it runs alone and lost
// none; else twice the others here, and four times more with each loss
// (the others may be on other nodes), at most maxSpread.
func spread(losses, allocating int) int {
	w := max(1, 2*(allocating-1))
	for range losses {
		if w >= maxSpread {
			break
		}
		w *= 4
	}
	return min(w, maxSpread)
}

// maxSpread bounds spread.
const maxSpread = 64

// pickPort is a free port of [lo, hi] (not in taken, not busy), at
// random among the first window ones.
func pickPort(taken map[int]bool, lo, hi int, busy func(port int) bool, window int) (int, bool) {
	free := make([]int, 0, window)
	for port := lo; port <= hi && len(free) < window; port++ {
		if !taken[port] && (busy == nil || !busy(port)) {
			free = append(free, port)
		}
	}
	if len(free) == 0 {
		return 0, false
	}
	return free[rand.IntN(len(free))], true
}

// taken is the set of ports that have a stream of protocol p or are in
// one of its ranges, and the revision it was read at.
func (s *State) taken(ctx context.Context, p stream.Protocol) (map[int]bool, int64, error) {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Txn(rctx).Then(clientv3.OpGet(s.protocolPrefix(p), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.rangePrefix()+string(p)+"/", clientv3.WithPrefix())).Commit()
	if err != nil {
		return nil, 0, unavailable("read the ports taken", err)
	}
	taken := s.portsOf(resp.Responses[0].GetResponseRange().Kvs)
	s.coveredPorts(taken, resp.Responses[1].GetResponseRange().Kvs, p)
	return taken, resp.Header.Revision, nil
}

// protocolPrefix is the prefix of the keys of protocol p's streams.
func (s *State) protocolPrefix(p stream.Protocol) string { return s.marker + "/" + string(p) + "/" }

// portsOf is the set of ports of stream keys kvs.
func (s *State) portsOf(kvs []*mvccpb.KeyValue) map[int]bool {
	taken := make(map[int]bool, len(kvs)+1)
	for _, kv := range kvs {
		if id, ok := s.idOf(kv.Key); ok {
			taken[id.Port] = true
		}
	}
	return taken
}

// Import creates or replaces every spec and, with prune, deletes the
// streams specs does not name, in one transaction that holds only if no
// write came between the read it was planned from and itself. Specs equal
// to what is stored are not written; an import that changes nothing takes
// no revision.
func (s *State) Import(specs []stream.Spec, prune bool) (desired.ImportResult, error) {
	if err := s.writable("import"); err != nil {
		return desired.ImportResult{}, err
	}
	byID := make(map[stream.ID]stream.Spec, len(specs))
	for _, sp := range specs {
		if _, dup := byID[sp.ID()]; dup {
			return desired.ImportResult{}, fmt.Errorf("import: %s: %w", sp.ID(), desired.ErrDuplicate)
		}
		byID[sp.ID()] = sp
	}
	ctx, cancel := s.ctx()
	defer cancel()
	for range maxAttempts {
		res, ok, err := s.importOnce(ctx, byID, specs, prune)
		if err != nil {
			return desired.ImportResult{}, fmt.Errorf("import: %w", err)
		}
		if ok {
			return res, nil
		}
	}
	return desired.ImportResult{}, fmt.Errorf("import: %w", errContention)
}

// importOnce plans the import from one list and commits it if the state
// is still at the list's revision.
func (s *State) importOnce(ctx context.Context, byID map[stream.ID]stream.Spec, specs []stream.Spec, prune bool) (desired.ImportResult, bool, error) {
	list, rev, hdr, err := s.list(ctx)
	if err != nil {
		return desired.ImportResult{}, false, err
	}
	if s.vet(ctx, hdr) {
		return desired.ImportResult{}, false, s.writable("import")
	}
	cur := make(map[stream.ID]stream.Spec, len(list))
	for _, sp := range list {
		cur[sp.ID()] = sp
	}
	res := desired.PlanImport(cur, specs, prune)
	if len(res.Create)+len(res.Update)+len(res.Delete) == 0 {
		res.Revision = rev
		return res, true, nil
	}
	if err := desired.ImportOverlap(cur, res, byID); err != nil {
		return desired.ImportResult{}, false, err
	}
	var ops []clientv3.Op
	var leases []clientv3.LeaseID
	committed := false
	defer func() {
		if !committed {
			s.revoke(leases...)
		}
	}()
	for _, id := range slices.Concat(res.Create, res.Update) {
		var old *stream.Spec
		if c, ok := cur[id]; ok {
			old = &c
		}
		sp := byID[id]
		lease, err := s.grant(ctx, sp) // one per stream: revoking it never touches another
		if err != nil {
			return desired.ImportResult{}, false, err
		}
		leases = append(leases, lease)
		op, err := s.putOp(s.stamp(sp, old), lease)
		if err != nil {
			return desired.ImportResult{}, false, err
		}
		ops = append(append(ops, op), s.indexOps(id, &sp, old, lease)...)
	}
	for _, id := range res.Delete {
		old := cur[id]
		ops = append(append(ops, clientv3.OpDelete(s.key(id), clientv3.WithPrevKV())), s.indexOps(id, nil, &old, 0)...)
	}
	ok, newRev, prev, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.marker), "=", int64(rev))}, ops...)
	if err != nil || !ok {
		committed = mayHaveApplied(err)
		return desired.ImportResult{}, false, err
	}
	committed = true
	s.revoke(prev...)
	res.Revision = uint64(newRev)
	return res, true, nil
}
