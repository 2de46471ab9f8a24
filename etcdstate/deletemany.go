package etcdstate

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// maxTxnOps is etcd's default --max-txn-ops: a DeleteMany keeps each of
// its transactions' comparisons, operations and reads within it, so that
// it works on an etcd left at its default.
const maxTxnOps = 128

// DeleteMany removes every stream of items still at its item's revision
// and returns them and the revision of the (last) delete. Like Delete, it
// starts from the local copy; an item the copy does not show at its
// revision is read from etcd first. It deletes in one transaction that
// compares each key's modification revision with the one expected, per
// chunk of at most maxTxnOps operations (about 127 streams: more are
// several revisions). A transaction that fails because a key changed
// reads the chunk's keys in its Else branch and is tried again with the
// items still at their revision; the others are skipped. On an error, the
// streams returned are those deleted before it.
func (s *State) DeleteMany(items []desired.Conditional) ([]stream.Spec, uint64, error) {
	if err := s.writable(fmt.Sprintf("delete %d streams", len(items))); err != nil {
		return nil, 0, err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	items = uniqueItems(items)
	cur := make(map[stream.ID]currentSpec, len(items))
	var ask []stream.ID
	for _, it := range items {
		c := s.localCurrent(it.ID)
		cur[it.ID] = c
		if !c.holds(it) {
			ask = append(ask, it.ID)
		}
	}
	if err := s.readCurrent(ctx, ask, cur); err != nil {
		return nil, 0, fmt.Errorf("delete %d streams: %w", len(items), err)
	}
	var deleted []stream.Spec
	var rev uint64
	pending := holding(items, cur)
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt == maxAttempts {
			return deleted, rev, fmt.Errorf("delete %d streams: %w", len(items), errContention)
		}
		chunk, rest := s.nextChunk(pending, cur)
		ok, r, err := s.commitDeletes(ctx, chunk, cur)
		if err != nil {
			return deleted, rev, fmt.Errorf("delete %d streams: %w", len(items), err)
		}
		if !ok { // cur now has the chunk as etcd has it
			pending = holding(pending, cur)
			continue
		}
		for _, it := range chunk {
			deleted = append(deleted, *cur[it.ID].spec)
		}
		rev, pending = r, rest
	}
	return deleted, rev, nil
}

// holds says whether c is a stream at the revision it asks (any, for 0).
func (c currentSpec) holds(it desired.Conditional) bool {
	return c.spec != nil && (it.Revision == 0 || uint64(c.modRev) == it.Revision)
}

// uniqueItems is items without a second item for the same stream.
func uniqueItems(items []desired.Conditional) []desired.Conditional {
	seen := make(map[stream.ID]bool, len(items))
	out := make([]desired.Conditional, 0, len(items))
	for _, it := range items {
		if !seen[it.ID] {
			seen[it.ID] = true
			out = append(out, it)
		}
	}
	return out
}

// holding is the items of items whose stream in cur holds them.
func holding(items []desired.Conditional, cur map[stream.ID]currentSpec) []desired.Conditional {
	var out []desired.Conditional
	for _, it := range items {
		if cur[it.ID].holds(it) {
			out = append(out, it)
		}
	}
	return out
}

// readCurrent sets cur of ids to the streams as etcd has them, reading
// them in transactions of at most maxTxnOps reads.
func (s *State) readCurrent(ctx context.Context, ids []stream.ID, cur map[stream.ID]currentSpec) error {
	for len(ids) > 0 {
		n := min(len(ids), maxTxnOps)
		gets := make([]clientv3.Op, n)
		for i, id := range ids[:n] {
			gets[i] = clientv3.OpGet(s.key(id))
		}
		resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
		if err != nil {
			return unavailable("read", err)
		}
		if err := s.setCurrent(ids[:n], resp, cur); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

// setCurrent sets cur of ids to the streams the reads of resp (one per
// id, in order) found.
func (s *State) setCurrent(ids []stream.ID, resp *clientv3.TxnResponse, cur map[stream.ID]currentSpec) error {
	for i, id := range ids {
		c := currentSpec{fromEtcd: true}
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) == 1 {
			sp, err := decode(kvs[0].Key, kvs[0].Value, kvs[0].ModRevision)
			if err != nil {
				return err
			}
			c.spec, c.modRev = &sp, kvs[0].ModRevision
		}
		cur[id] = c
	}
	return nil
}

// nextChunk splits items into the first ones whose deletes (and the
// marker's rewrite) fit in one transaction of maxTxnOps operations, and
// the rest.
func (s *State) nextChunk(items []desired.Conditional, cur map[stream.ID]currentSpec) (chunk, rest []desired.Conditional) {
	ops := 1 // the marker
	for i, it := range items {
		n := 1 + len(s.indexOps(it.ID, nil, cur[it.ID].spec, 0))
		if ops+n > maxTxnOps {
			return items[:i], items[i:]
		}
		ops += n
	}
	return items, nil
}

// commitDeletes deletes the streams of chunk (and their index entries) if
// each key is still at its modification revision in cur, and revokes the
// leases of the keys it deleted. If one is not, it deletes none and sets
// cur of chunk to the streams as etcd has them, read in the same
// transaction.
func (s *State) commitDeletes(ctx context.Context, chunk []desired.Conditional, cur map[stream.ID]currentSpec) (bool, uint64, error) {
	cmps := make([]clientv3.Cmp, 0, len(chunk))
	ops := make([]clientv3.Op, 0, len(chunk)+1)
	gets := make([]clientv3.Op, 0, len(chunk))
	ids := make([]stream.ID, 0, len(chunk))
	for _, it := range chunk {
		c, key := cur[it.ID], s.key(it.ID)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", c.modRev))
		ops = append(append(ops, clientv3.OpDelete(key, clientv3.WithPrevKV())), s.indexOps(it.ID, nil, c.spec, 0)...)
		gets = append(gets, clientv3.OpGet(key))
		ids = append(ids, it.ID)
	}
	ops = append(ops, clientv3.OpPut(s.marker, ""))
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(gets...).Commit()
	if err != nil {
		return false, 0, unavailable("write", err)
	}
	if !resp.Succeeded {
		return false, 0, s.setCurrent(ids, resp, cur)
	}
	s.wrote(resp.Header.Revision)
	s.revoke(prevLeases(resp)...)
	return true, uint64(resp.Header.Revision), nil
}
