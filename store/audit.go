package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

var (
	bucketAudit   = []byte("audit")
	keyAuditBytes = []byte("audit_bytes") // in bucketMeta: the entries' total size
)

// The audit log's bounds. Entries are kept while both the count and the
// byte budget hold, oldest dropped first; one entry never takes more than
// MaxAuditEntryBytes, so that a few writes of huge specs cannot push out
// the history: 10,000 ordinary entries (~600 bytes each) fit the default
// budget, and the largest possible ones still leave ~2,000.
const (
	// DefaultAuditRetention is how many entries are kept when Options
	// says nothing.
	DefaultAuditRetention = 10000
	// DefaultAuditMaxBytes is the entries' total size (their JSON) kept
	// when Options says nothing.
	DefaultAuditMaxBytes = 16 << 20
	// MaxAuditEntryBytes is the most one entry takes: a bigger one has
	// its stream before and after compacted (see compactAudit).
	MaxAuditEntryBytes = 8 << 10
)

// What compactAudit keeps of each spec of an oversized entry.
const (
	compactListItems   = 8
	compactDescription = 256
)

// auditEntry is an audit record as the file keeps it (JSON). Entries
// written before the record named no transport carry the request in the
// legacy fields instead; fromDisk reads both.
type auditEntry struct {
	desired.AuditRecord

	// The legacy fields: the remote address, the token id, the HTTP
	// method, path, route and status.
	Remote string `json:"remote,omitempty"`
	Token  string `json:"token,omitempty"`
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
	Route  string `json:"route,omitempty"`
	Status int    `json:"status,omitempty"`
}

func toDisk(r desired.AuditRecord) auditEntry { return auditEntry{AuditRecord: r} }

// fromDisk is the record e keeps. A legacy entry's method and path become
// the request "METHOD PATH", as the API writes it now.
func fromDisk(e auditEntry) desired.AuditRecord {
	r := e.AuditRecord
	if e.Method != "" || e.Path != "" || e.Route != "" || e.Remote != "" || e.Token != "" || e.Status != 0 {
		r.Source, r.Actor, r.Operation, r.Outcome = e.Remote, e.Token, e.Route, e.Status
		if e.Method != "" || e.Path != "" {
			r.Request = e.Method + " " + e.Path
		}
	}
	return r
}

// AppendAudit records rec, giving it the next sequence number, and drops
// the oldest entries beyond the retention count or the byte budget. It
// goes through the commit loop, so it shares fsyncs with concurrent writes
// and waits for no timer.
func (s *Store) AppendAudit(rec desired.AuditRecord) error {
	e := toDisk(rec)
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
		v, err := marshalAudit(e)
		if err != nil {
			return err
		}
		if err := b.Put(u64(seq), v); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		total, err := s.trimAudit(b, seq, auditBytes(meta)+int64(len(v)))
		if err != nil {
			return err
		}
		return meta.Put(keyAuditBytes, u64(uint64(total)))
	}})
}

// trimAudit deletes the oldest entries while more than the retention
// count are kept (keys are sequence numbers, so the oldest come first and
// everything up to seq-retention goes) or their total size is over the
// budget; it never deletes the newest, seq. It returns the size kept.
func (s *Store) trimAudit(b *bolt.Bucket, seq uint64, total int64) (int64, error) {
	var cutoff uint64
	if seq > uint64(s.auditRetention) {
		cutoff = seq - uint64(s.auditRetention)
	}
	var old [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		n := binary.BigEndian.Uint64(k)
		if n >= seq || (n > cutoff && total <= s.auditMaxBytes) {
			break
		}
		old = append(old, append([]byte(nil), k...))
		total -= int64(len(v))
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// marshalAudit encodes e, compacted if it is over MaxAuditEntryBytes.
func marshalAudit(e auditEntry) ([]byte, error) {
	v, err := json.Marshal(e)
	if err != nil || len(v) <= MaxAuditEntryBytes {
		return v, err
	}
	e = compactAudit(e)
	if v, err = json.Marshal(e); err != nil || len(v) <= MaxAuditEntryBytes {
		return v, err
	}
	e.Before, e.After = nil, nil
	e.Compacted = "the stream before and after were left out: too large for the audit log"
	return json.Marshal(e)
}

// compactAudit keeps the first few backends, routes and allow entries and the
// start of the description of the stream before and after, and says in
// Compacted what it left out.
func compactAudit(e auditEntry) auditEntry {
	var notes []string
	compact := func(name string, sp *stream.Spec) *stream.Spec {
		if sp == nil {
			return nil
		}
		c := sp.Clone()
		var cut []string
		if n := len(c.Backends); n > compactListItems {
			c.Backends = c.Backends[:compactListItems]
			cut = append(cut, fmt.Sprintf("%d of %d backends", n-compactListItems, n))
		}
		if n := len(c.Routes); n > compactListItems {
			c.Routes = c.Routes[:compactListItems]
			cut = append(cut, fmt.Sprintf("%d of %d routes", n-compactListItems, n))
		}
		if n := len(c.Allow); n > compactListItems {
			c.Allow = c.Allow[:compactListItems]
			cut = append(cut, fmt.Sprintf("%d of %d allow entries", n-compactListItems, n))
		}
		if n := len(c.Description); n > compactDescription {
			c.Description = strings.ToValidUTF8(c.Description[:compactDescription], "")
			cut = append(cut, fmt.Sprintf("%d of %d bytes of description", n-len(c.Description), n))
		}
		if len(cut) > 0 {
			notes = append(notes, name+": "+strings.Join(cut, ", "))
		}
		return &c
	}
	e.Before = compact("before", e.Before)
	e.After = compact("after", e.After)
	e.Compacted = "left out to fit the audit log: " + strings.Join(notes, "; ")
	return e
}

// auditBytes is the entries' total size recorded in meta.
func auditBytes(meta *bolt.Bucket) int64 {
	v := meta.Get(keyAuditBytes)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// initAuditBytes records the entries' total size in a file written before
// it was kept.
func initAuditBytes(tx *bolt.Tx, meta *bolt.Bucket) error {
	if meta.Get(keyAuditBytes) != nil {
		return nil
	}
	var total uint64
	if b := tx.Bucket(bucketAudit); b != nil {
		b.ForEach(func(_, v []byte) error {
			total += uint64(len(v))
			return nil
		})
	}
	return meta.Put(keyAuditBytes, u64(total))
}

// Audit returns up to limit records older than before (the newest when
// before is 0), newest first.
func (s *Store) Audit(before uint64, limit int) ([]desired.AuditRecord, error) {
	var out []desired.AuditRecord
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
			var e auditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode audit entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, fromDisk(e))
		}
		return nil
	})
	return out, err
}
