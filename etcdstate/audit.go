package etcdstate

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
)

// MaxAuditRecordBytes is the most one audit record takes in etcd: a
// bigger one is kept without its stream before and after (Compacted says
// so).
const MaxAuditRecordBytes = 8 << 10

// marshalEntry encodes e, without its stream before and after when it is
// over MaxAuditRecordBytes.
func marshalEntry(e desired.AuditRecord) ([]byte, error) {
	v, err := json.Marshal(e)
	if err != nil || len(v) <= MaxAuditRecordBytes {
		return v, err
	}
	e.Before, e.After = nil, nil
	e.Compacted = "the stream before and after were left out: too large for the audit log"
	return json.Marshal(e)
}

func (s *State) auditPrefix() string { return s.prefix + "/audit/" }

func (s *State) auditKey(seq uint64) string { return fmt.Sprintf("%s%020d", s.auditPrefix(), seq) }

// seqOf is the sequence number of an audit key.
func (s *State) seqOf(key []byte) (uint64, error) {
	return strconv.ParseUint(strings.TrimPrefix(string(key), s.auditPrefix()), 10, 64)
}

// AppendAudit stores rec under the sequence number after the newest
// record's, with a transaction that creates the key only if it does not
// exist (a concurrent append takes the next one), and deletes in the same
// transaction the records beyond the retention. It does not touch the
// state's marker: a record takes no revision of the state. It is refused
// at once while etcd does not answer; a held node still records (the
// record of its confirmation, of the writes it refused).
func (s *State) AppendAudit(rec desired.AuditRecord) error {
	if s.stale() {
		return fmt.Errorf("append to the audit log: %w", s.writable("write"))
	}
	ctx, cancel := s.ctx()
	defer cancel()
	for range maxAttempts {
		ok, err := s.appendOnce(ctx, rec)
		if err != nil {
			return fmt.Errorf("append to the audit log: %w", err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("append to the audit log: %w", errContention)
}

func (s *State) appendOnce(ctx context.Context, rec desired.AuditRecord) (bool, error) {
	resp, err := s.cli.Get(ctx, s.auditPrefix(), clientv3.WithLastKey()...)
	if err != nil {
		return false, unavailable("read the last record", err)
	}
	seq := uint64(1)
	if len(resp.Kvs) == 1 {
		last, err := s.seqOf(resp.Kvs[0].Key)
		if err != nil {
			return false, fmt.Errorf("audit key %q: %w", resp.Kvs[0].Key, err)
		}
		seq = last + 1
	}
	e := rec
	e.Seq = seq
	v, err := marshalEntry(e)
	if err != nil {
		return false, err
	}
	key := s.auditKey(seq)
	ops := []clientv3.Op{clientv3.OpPut(key, string(v))}
	if keep := uint64(s.auditRetention); seq > keep {
		ops = append(ops, clientv3.OpDelete(s.auditPrefix(), clientv3.WithRange(s.auditKey(seq-keep+1))))
	}
	txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(ops...).Commit()
	if err != nil {
		return false, unavailable("write the record", err)
	}
	return txn.Succeeded, nil
}

// Audit returns up to limit records older than before (the newest when
// before is 0), newest first, read from etcd in one request.
func (s *State) Audit(before uint64, limit int) ([]desired.AuditRecord, error) {
	if limit <= 0 {
		return nil, nil
	}
	end := clientv3.GetPrefixRangeEnd(s.auditPrefix())
	if before != 0 {
		end = s.auditKey(before)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Get(ctx, s.auditPrefix(), clientv3.WithRange(end),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", unavailable("read", err))
	}
	out := make([]desired.AuditRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e desired.AuditRecord
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("decode audit record %q: %w", kv.Key, err)
		}
		out = append(out, e)
	}
	return out, nil
}
