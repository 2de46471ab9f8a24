package etcdstate

import (
	"context"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// The range index: P/ranges/<id> holds the last port of each stream that
// listens on a range ("tcp/10000" → "10099"), written and deleted in the
// transaction that writes or deletes the stream. A new single port reads
// only the index entries of the MaxRangePorts ports below it to know that
// no range covers it, rather than every stream there.

// rangePrefix is the prefix of the range index's keys.
func (s *State) rangePrefix() string { return s.prefix + "/ranges/" }

// rangeKey is the index key of the range stream id.
func (s *State) rangeKey(id stream.ID) string { return s.rangePrefix() + id.String() }

// span is the keys [from, to) of a run of ports.
type span struct{ from, to string }

// portSpans are the key spans under base+"<protocol>/" of the ports lo
// to hi: one per count of digits, since keys of ports with as many
// digits sort as the ports do. A span may also hold keys of shorter
// ports ("tcp/1001" sorts between "tcp/10000" and "tcp/10099"): readers
// filter them out by port, and comparisons only retry for them.
func portSpans(base string, p stream.Protocol, lo, hi int) []span {
	lo = max(lo, 1)
	var out []span
	pre := base + string(p) + "/"
	for start := 1; start <= hi && start <= 65535; start *= 10 {
		a, b := max(lo, start), min(hi, start*10-1)
		if a <= b {
			out = append(out, span{pre + strconv.Itoa(a), pre + strconv.Itoa(b) + "\x00"})
		}
	}
	return out
}

// portCheck is what a write of sp read to know that its ports are free:
// the key spans it read, to compare in its transaction (nothing written
// there after the read's revision), and the revision.
type portCheck struct {
	spans []span
	rev   int64
}

// cmps are the comparisons that keep c true until the transaction.
func (c portCheck) cmps() []clientv3.Cmp {
	out := make([]clientv3.Cmp, 0, len(c.spans))
	for _, sp := range c.spans {
		out = append(out, clientv3.Compare(clientv3.ModRevision(sp.from), "<", c.rev+1).WithRange(sp.to))
	}
	return out
}

// checkPorts reads, in one revision, the range index entries that may
// reach sp's ports and, for a range, the stream keys inside it. It
// returns a *desired.PortConflictError when another stream has one of
// sp's ports, else what to compare in the write's transaction.
func (s *State) checkPorts(ctx context.Context, sp stream.Spec) (portCheck, error) {
	idx, keys := s.checkSpans(sp)
	ops := make([]clientv3.Op, 0, len(idx)+len(keys))
	for _, r := range idx {
		ops = append(ops, clientv3.OpGet(r.from, clientv3.WithRange(r.to)))
	}
	for _, r := range keys {
		ops = append(ops, clientv3.OpGet(r.from, clientv3.WithRange(r.to), clientv3.WithKeysOnly()))
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Txn(rctx).Then(ops...).Commit()
	if err != nil {
		return portCheck{}, unavailable("read the ports taken", err)
	}
	for i, r := range resp.Responses {
		kvs := r.GetResponseRange().Kvs
		for _, o := range s.indexed(kvs, i < len(idx)) {
			if err := desired.Overlap(sp, o); err != nil {
				return portCheck{}, err
			}
		}
	}
	return portCheck{spans: append(idx, keys...), rev: resp.Header.Revision}, nil
}

// checkSpans are the key spans that a write of sp checks: the range
// index entries that may reach its ports and, for a range, the stream
// keys inside it.
func (s *State) checkSpans(sp stream.Spec) (idx, keys []span) {
	idx = portSpans(s.rangePrefix(), sp.Protocol, sp.Listen-stream.MaxRangePorts+1, sp.LastPort())
	if sp.IsRange() {
		keys = portSpans(s.marker+"/", sp.Protocol, sp.Listen+1, sp.LastPort())
	}
	return idx, keys
}

// localPortCheck is checkPorts from the local copy, without a request:
// the write's transaction then compares the spans with the copy's
// revision, and fails (to be checked against etcd) if a write the copy
// does not have yet touched them. A conflict it finds may be one etcd
// no longer has: the caller asks etcd before refusing.
func (s *State) localPortCheck(sp stream.Spec) (portCheck, error) {
	idx, keys := s.checkSpans(sp)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for q := max(1, sp.Listen-stream.MaxRangePorts+1); q <= sp.LastPort(); q++ {
		if o, ok := s.local[stream.ID{Protocol: sp.Protocol, Port: q}]; ok {
			if err := desired.Overlap(sp, o); err != nil {
				return portCheck{}, err
			}
		}
	}
	return portCheck{spans: append(idx, keys...), rev: int64(s.stateRev)}, nil
}

// portsFree checks sp's ports for a write: from the local copy on a
// write's first attempt, from etcd on later ones (after a transaction
// found the copy behind) and before refusing.
func (s *State) portsFree(ctx context.Context, sp stream.Spec, attempt int) (portCheck, error) {
	if attempt == 0 {
		if c, err := s.localPortCheck(sp); err == nil {
			return c, nil
		}
	}
	return s.checkPorts(ctx, sp)
}

// indexed are the streams kvs name: range index entries (index: their
// ranges) or stream keys (their first port).
func (s *State) indexed(kvs []*mvccpb.KeyValue, index bool) []stream.Spec {
	out := make([]stream.Spec, 0, len(kvs))
	for _, kv := range kvs {
		if !index {
			if id, ok := s.idOf(kv.Key); ok {
				out = append(out, stream.Spec{Protocol: id.Protocol, Listen: id.Port})
			}
			continue
		}
		id, err := stream.ParseID(strings.TrimPrefix(string(kv.Key), s.rangePrefix()))
		last, aerr := strconv.Atoi(string(kv.Value))
		if err == nil && aerr == nil {
			out = append(out, stream.Spec{Protocol: id.Protocol, Listen: id.Port, ListenEnd: last})
		}
	}
	return out
}

// indexOps are the operations that keep the range index right when sp
// (nil: deleted) replaces cur (nil: none) for id; an index entry goes
// under the stream's lease (0: none), so that etcd deletes both at once.
func (s *State) indexOps(id stream.ID, sp, cur *stream.Spec, lease clientv3.LeaseID) []clientv3.Op {
	switch {
	case sp != nil && sp.IsRange():
		return []clientv3.Op{clientv3.OpPut(s.rangeKey(id), strconv.Itoa(sp.ListenEnd), clientv3.WithLease(lease))}
	case cur != nil && cur.IsRange():
		return []clientv3.Op{clientv3.OpDelete(s.rangeKey(id))}
	}
	return nil
}

// needsPortCheck says whether sp, replacing cur (nil: a create), may
// take ports that another stream has: it is new or reaches further.
func needsPortCheck(sp stream.Spec, cur *stream.Spec) bool {
	return cur == nil || cur.LastPort() < sp.LastPort()
}

// coveredPorts adds to taken the ports of the ranges of protocol p that
// the range index entries kvs name.
func (s *State) coveredPorts(taken map[int]bool, kvs []*mvccpb.KeyValue, p stream.Protocol) {
	for _, o := range s.indexed(kvs, true) {
		if o.Protocol != p {
			continue
		}
		for q := o.Listen; q <= o.LastPort(); q++ {
			taken[q] = true
		}
	}
}
