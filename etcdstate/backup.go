package etcdstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// BackupFormat names the document Backup writes.
const BackupFormat = "stream-conductor-etcd-backup"

// backupDoc is a backup: one JSON document of the state at one revision.
//
//	{"format": "stream-conductor-etcd-backup", "version": 1,
//	 "prefix": "/stream-conductor",   the prefix it was taken under
//	 "revision": 1234,                the state's revision
//	 "etcd_revision": 1240,           the etcd revision it was read at
//	 "streams": [spec, ...],          as GET /v1/streams shows them
//	 "audit": [record, ...]}          oldest first, each with its seq
type backupDoc struct {
	Format       string                `json:"format"`
	Version      int                   `json:"version"`
	Prefix       string                `json:"prefix"`
	Revision     uint64                `json:"revision"`
	EtcdRevision int64                 `json:"etcd_revision"`
	Streams      []stream.Spec         `json:"streams"`
	Audit        []desired.AuditRecord `json:"audit"`
}

// Backup writes the streams and the audit log, both read at one etcd
// revision, as one JSON document (see backupDoc; Restore reads it back).
// It reads everything before it calls begin, so begin is told the exact
// size.
func (s *State) Backup(w io.Writer, begin func(desired.BackupInfo)) error {
	ctx, cancel := s.ctx()
	defer cancel()
	list, rev, hdr, err := s.list(ctx)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	at := hdr.rev
	resp, err := s.cli.Get(ctx, s.auditPrefix(), clientv3.WithPrefix(), clientv3.WithRev(at))
	if err != nil {
		return fmt.Errorf("backup: %w", unavailable("read the audit log", err))
	}
	doc := backupDoc{Format: BackupFormat, Version: 1, Prefix: s.prefix, Revision: rev, EtcdRevision: at,
		Streams: list, Audit: make([]desired.AuditRecord, 0, len(resp.Kvs))}
	for _, kv := range resp.Kvs {
		var e desired.AuditRecord
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return fmt.Errorf("backup: decode audit record %q: %w", kv.Key, err)
		}
		doc.Audit = append(doc.Audit, e)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	begin(desired.BackupInfo{Size: int64(len(b)), Revision: rev})
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// ErrNotEmpty: Restore was asked to write under a prefix that holds keys.
var ErrNotEmpty = errors.New("the prefix is not empty")

// restoreChunk is how many audit records one restore transaction writes.
const restoreChunk = 100

// Restore writes the backup b under prefix, which must hold no key: the
// audit log first, then every stream in one transaction. When the
// cluster's revision is below the backup's, it first advances it with
// writes to one scratch key, so that the streams are written at the
// backup's revision and a node that saw the state before does not see its
// revision go backwards; on a cluster already past it (or written to
// meanwhile) the streams take the next revision. It returns the restored
// state's revision. The streams' transaction needs etcd's --max-txn-ops
// above their number.
func Restore(ctx context.Context, cli *clientv3.Client, prefix string, b []byte) (uint64, error) {
	var doc backupDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return 0, fmt.Errorf("restore: decode the backup: %w", err)
	}
	if doc.Format != BackupFormat || doc.Version != 1 {
		return 0, fmt.Errorf("restore: not a backup of this format (format %q, version %d)", doc.Format, doc.Version)
	}
	s := &State{cli: cli, prefix: trimPrefix(prefix)}
	s.marker = s.prefix + "/streams"
	n, err := cli.Get(ctx, s.prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	switch {
	case err != nil:
		return 0, fmt.Errorf("restore: %w", unavailable("read", err))
	case n.Count > 0:
		return 0, fmt.Errorf("restore under %s (%d keys): %w", s.prefix, n.Count, ErrNotEmpty)
	}
	if err := s.restoreAudit(ctx, doc.Audit); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	scratch := s.prefix + "/restoring"
	if err := advance(ctx, cli, scratch, int64(doc.Revision)-1); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	ops := []clientv3.Op{clientv3.OpDelete(scratch), clientv3.OpPut(s.marker, "")}
	for _, sp := range doc.Streams {
		sp.Revision = 0
		lease, err := restoreLease(ctx, cli, sp)
		if err != nil {
			return 0, fmt.Errorf("restore %s: %w", sp.ID(), err)
		}
		op, err := s.putOp(sp, lease)
		if err != nil {
			return 0, fmt.Errorf("restore %s: %w", sp.ID(), err)
		}
		ops = append(append(ops, op), s.indexOps(sp.ID(), &sp, nil, lease)...)
	}
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.marker), "=", 0)).Then(ops...).Commit()
	switch {
	case err != nil:
		return 0, fmt.Errorf("restore %d streams: %w", len(doc.Streams), unavailable("write", err))
	case !resp.Succeeded:
		return 0, fmt.Errorf("restore under %s: streams were written meanwhile: %w", s.prefix, ErrNotEmpty)
	}
	return uint64(resp.Header.Revision), nil
}

// restoreLease is the lease of a restored stream with a deadline (see
// expiry.go; one whose deadline passed is deleted by etcd right after the
// restore), 0 for one without. Leases of a restore that fails run out by
// themselves.
func restoreLease(ctx context.Context, cli *clientv3.Client, sp stream.Spec) (clientv3.LeaseID, error) {
	if !sp.Expires() {
		return 0, nil
	}
	resp, err := cli.Grant(ctx, leaseTTL(*sp.ExpiresAt, time.Now()))
	if err != nil {
		return 0, unavailable("grant a lease", err)
	}
	return resp.ID, nil
}

func (s *State) restoreAudit(ctx context.Context, entries []desired.AuditRecord) error {
	for len(entries) > 0 {
		chunk := entries[:min(restoreChunk, len(entries))]
		entries = entries[len(chunk):]
		ops := make([]clientv3.Op, 0, len(chunk))
		for _, e := range chunk {
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			ops = append(ops, clientv3.OpPut(s.auditKey(e.Seq), string(v)))
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return unavailable("write the audit log", err)
		}
	}
	return nil
}

// advanceBatch is how many scratch writes advance runs at once.
const advanceBatch = 32

// advance writes key until the cluster's revision is target (each write
// moves it by one), or does nothing when it is there already.
func advance(ctx context.Context, cli *clientv3.Client, key string, target int64) error {
	for {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return unavailable("read the revision", err)
		}
		missing := target - resp.Header.Revision
		if missing <= 0 {
			return nil
		}
		var wg sync.WaitGroup
		errs := make(chan error, advanceBatch)
		for range min(missing, advanceBatch) {
			wg.Go(func() {
				if _, err := cli.Put(ctx, key, ""); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return unavailable("advance the revision", err)
		}
	}
}

// BackupSize is the size a backup taken now would have (0 when etcd
// cannot be read): it reads the state and its audit log as Backup does.
func (s *State) BackupSize() int64 {
	var n int64
	if err := s.Backup(io.Discard, func(i desired.BackupInfo) { n = i.Size }); err != nil {
		s.log.Warn().Err(err).Msg("the size of a backup is not known")
		return 0
	}
	return n
}
