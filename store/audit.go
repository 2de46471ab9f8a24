package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/streamconductor/stream-conductor/stream"
)

var bucketAudit = []byte("audit")

// DefaultAuditRetention is how many audit entries are kept when Options
// says nothing.
const DefaultAuditRetention = 10000

// AuditEntry records one request that asked for a change.
type AuditEntry struct {
	Seq       uint64       `json:"seq"`
	Time      time.Time    `json:"time"`
	RequestID string       `json:"request_id"`
	Remote    string       `json:"remote"`
	Token     string       `json:"token"` // which token, never the token
	Method    string       `json:"method"`
	Path      string       `json:"path"`
	Route     string       `json:"route"`
	Stream    string       `json:"stream,omitempty"`
	Before    *stream.Spec `json:"before"`
	After     *stream.Spec `json:"after"`
	Status    int          `json:"status"`
	Result    string       `json:"result"` // "ok" or the error code
}

// AppendAudit records e, giving it the next sequence number, and drops the
// oldest entries beyond the retention count. It goes through the commit
// loop, so it shares fsyncs with concurrent writes and waits for no timer.
func (s *Store) AppendAudit(e AuditEntry) error {
	return s.enqueue(&op{sideline: true, done: make(chan error, 1), fn: func(tx *bolt.Tx, _ uint64) error {
		b, err := tx.CreateBucketIfNotExists(bucketAudit)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = seq
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := b.Put(u64(seq), v); err != nil {
			return err
		}
		// Retention: keys are sequence numbers, so the oldest come first;
		// normally one goes per append.
		if seq <= uint64(s.auditRetention) {
			return nil
		}
		cutoff := seq - uint64(s.auditRetention)
		var old [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= cutoff; k, _ = c.Next() {
			old = append(old, append([]byte(nil), k...))
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}})
}

// Audit returns up to limit entries older than before (all when before is
// 0), newest first.
func (s *Store) Audit(before uint64, limit int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		var k, v []byte
		if before == 0 {
			k, v = c.Last()
		} else {
			c.Seek(u64(before))
			k, v = c.Prev()
		}
		for ; k != nil && len(out) < limit; k, v = c.Prev() {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode audit entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}
