// Package store keeps the desired state, every stream's spec, in a bbolt
// file. It is the source of truth: every acknowledged write is fsynced
// before it returns. Reads are served from an in-memory copy that is
// replaced after each commit, so they never wait on the disk.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// The errors of the desired-state contract (package desired), named here
// too for the store's own callers.
var (
	ErrNotFound         = desired.ErrNotFound
	ErrExists           = desired.ErrExists
	ErrRevisionMismatch = desired.ErrRevisionMismatch
	ErrNoFreePort       = desired.ErrNoFreePort
	ErrCompacted        = desired.ErrCompacted
)

var (
	// ErrLocked: another process holds the database file.
	ErrLocked = errors.New("database is locked by another process")
	// ErrSchema: the file was written by an incompatible version.
	ErrSchema = errors.New("unsupported schema version")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store is closed")
	// ErrCorrupt: the file is damaged (truncated, overwritten, or its
	// pages fail bbolt's consistency check).
	ErrCorrupt = errors.New("database file is corrupted")
)

// SchemaVersion is the layout of the buckets this code reads and writes.
const SchemaVersion = 1

var (
	bucketMeta    = []byte("meta")
	bucketStreams = []byte("streams")
	keySchema     = []byte("schema_version")
	keyRevision   = []byte("revision")
)

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for another process's file lock
	// (default 1s).
	LockTimeout time.Duration
	// Now stamps created_at/updated_at (default time.Now).
	Now func() time.Time
	// AuditRetention is how many audit entries are kept (default
	// DefaultAuditRetention).
	AuditRetention int
	// AuditMaxBytes bounds the audit entries' total size (default
	// DefaultAuditMaxBytes); the oldest go first.
	AuditMaxBytes int64
}

// Store is the bbolt-backed desired state. It is safe for concurrent use.
type Store struct {
	db             *bolt.DB
	now            func() time.Time
	changes        chan struct{}
	auditRetention int
	auditMaxBytes  int64

	// path and file identify the database file opened; Check compares
	// them with the file now at path.
	path     string
	file     os.FileInfo
	detachMu sync.Mutex
	detached error

	ops      chan *op
	closing  chan struct{}
	loopDone chan struct{}

	// hasRanges is set once a range was stored (at open, or by a write
	// in the commit loop); until then a single port conflicts only with
	// its own key.
	hasRanges atomic.Bool

	mu        sync.RWMutex
	specs     map[stream.ID]stream.Spec
	list      []stream.Spec // sorted by protocol, then port; never mutated
	listValid bool
	rev       uint64
	history   desired.History // the latest changes, for Since
	updated   chan struct{}   // closed at the next commit
}

// Open opens (creating if needed) the database at path, creates its
// buckets, checks the schema version and loads the specs into memory.
func Open(path string, o Options) (*Store, error) {
	if o.LockTimeout == 0 {
		o.LockTimeout = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AuditRetention <= 0 {
		o.AuditRetention = DefaultAuditRetention
	}
	if o.AuditMaxBytes <= 0 {
		o.AuditMaxBytes = DefaultAuditMaxBytes
	}
	db, err := openBolt(path, &bolt.Options{Timeout: o.LockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w: %w", path, ErrCorrupt, err)
	}
	// bbolt does not expose its file: the path is stat'ed at once instead.
	fi, err := os.Stat(path)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{
		db: db, now: o.Now, path: path, file: fi,
		auditRetention: o.AuditRetention, auditMaxBytes: o.AuditMaxBytes,
		changes: make(chan struct{}, 1), updated: make(chan struct{}),
		specs: map[stream.ID]stream.Spec{},
		ops:   make(chan *op), closing: make(chan struct{}), loopDone: make(chan struct{}),
	}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	go s.commitLoop()
	return s, nil
}

// openBolt opens the file, turning the panics bbolt raises on some damaged
// files into errors, and so the memory faults of a damaged file's pages
// read through bbolt's mmap (a freelist page beyond the file's end, say),
// which would otherwise end the process.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("%v", p)
		}
	}()
	return bolt.Open(path, 0o600, o)
}

// init creates the buckets, checks the schema and the file's consistency,
// and loads every spec. A damaged file is an error, never an empty state.
func (s *Store) init() (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // see openBolt
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
	}()
	return s.db.Update(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			return fmt.Errorf("%w: %w", ErrCorrupt, cerr)
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		streams, err := tx.CreateBucketIfNotExists(bucketStreams)
		if err != nil {
			return err
		}
		switch v := meta.Get(keySchema); {
		case v == nil:
			if err := meta.Put(keySchema, u64(SchemaVersion)); err != nil {
				return err
			}
		case len(v) != 8 || binary.BigEndian.Uint64(v) != SchemaVersion:
			return fmt.Errorf("%w %x (this build reads %d)", ErrSchema, v, SchemaVersion)
		}
		s.rev = revision(meta)
		s.history.Base = s.rev
		if err := initAuditBytes(tx, meta); err != nil {
			return err
		}
		return streams.ForEach(func(k, v []byte) error {
			var sp stream.Spec
			if err := json.Unmarshal(v, &sp); err != nil {
				return fmt.Errorf("decode stream %q: %w", k, err)
			}
			s.specs[sp.ID()] = sp
			if sp.IsRange() {
				s.hasRanges.Store(true)
			}
			return nil
		})
	})
}

// Close stops taking writes, lets the one in progress finish, and
// releases the database file.
func (s *Store) Close() error {
	close(s.closing)
	<-s.loopDone
	return s.db.Close()
}

// Changes delivers a value after writes commit. Sends never block and
// coalesce: one receive may stand for many writes. It has one consumer.
func (s *Store) Changes() <-chan struct{} { return s.changes }

// Get returns the stream with id.
func (s *Store) Get(id stream.ID) (stream.Spec, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sp, ok := s.specs[id]
	if !ok {
		return stream.Spec{}, ErrNotFound
	}
	return sp.Clone(), nil
}

// Has reports whether a stream has id.
func (s *Store) Has(id stream.ID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.specs[id]
	return ok
}

// List returns every stream sorted by protocol and port, and the store
// revision they reflect. The slice is shared: callers must not modify it or
// the specs' slices.
func (s *Store) List() ([]stream.Spec, uint64) {
	s.mu.RLock()
	if s.listValid {
		defer s.mu.RUnlock()
		return s.list, s.rev
	}
	s.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.listValid {
		s.rebuildList()
	}
	return s.list, s.rev
}

// Revision is the store's current revision: it grows by one with every
// write and delete.
func (s *Store) Revision() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// Match is a precondition on a write (desired.Match).
type Match = desired.Match

// Put creates or replaces sp (keyed by its id) if m holds, and returns the
// stored spec and the one it replaced (nil on create).
func (s *Store) Put(sp stream.Spec, m Match) (stored stream.Spec, prev *stream.Spec, err error) {
	id := sp.ID()
	err = s.update(func(tx *bolt.Tx, rev uint64) error {
		cur, err := get(tx, id)
		if err != nil {
			return err
		}
		if err := m.Check(cur); err != nil {
			return err
		}
		if err := s.checkPorts(tx, sp, cur); err != nil {
			return err
		}
		if sp.IsRange() {
			s.hasRanges.Store(true)
		}
		stored = s.stamp(sp, cur, rev)
		prev = cur
		return put(tx, stored)
	}, func() {
		s.specs[id] = stored.Clone()
		s.history.Add(desired.Change{Revision: stored.Revision, ID: id, Spec: ptr(stored.Clone())})
	})
	if err != nil {
		return stream.Spec{}, nil, fmt.Errorf("put %s: %w", id, err)
	}
	return stored, prev, nil
}

// Delete removes the stream with id if m holds, and returns it with the
// store revision of the delete.
func (s *Store) Delete(id stream.ID, m Match) (prev stream.Spec, rev uint64, err error) {
	err = s.update(func(tx *bolt.Tx, r uint64) error {
		cur, err := get(tx, id)
		if err != nil {
			return err
		}
		if cur == nil {
			return ErrNotFound
		}
		if err := m.Check(cur); err != nil {
			return err
		}
		prev, rev = *cur, r
		return tx.Bucket(bucketStreams).Delete([]byte(id.String()))
	}, func() {
		delete(s.specs, id)
		s.history.Add(desired.Change{Revision: rev, ID: id})
	})
	if err != nil {
		return stream.Spec{}, 0, fmt.Errorf("delete %s: %w", id, err)
	}
	return prev, rev, nil
}

// DeleteMany removes every stream of items still at its item's revision
// in one transaction (one revision, one fsync), and returns them and the
// store revision of the delete. Items whose stream is gone or changed are
// skipped; when none is left nothing is written and the revision is 0.
func (s *Store) DeleteMany(items []desired.Conditional) (deleted []stream.Spec, rev uint64, err error) {
	err = s.update(func(tx *bolt.Tx, r uint64) error {
		deleted = deleted[:0] // a batch that failed to commit may run fn again
		seen := make(map[stream.ID]bool, len(items))
		for _, it := range items {
			cur, err := get(tx, it.ID)
			if err != nil {
				return err
			}
			if cur == nil || seen[it.ID] || (desired.Match{Revision: it.Revision}).Check(cur) != nil {
				continue
			}
			seen[it.ID] = true
			if err := tx.Bucket(bucketStreams).Delete([]byte(it.ID.String())); err != nil {
				return err
			}
			deleted = append(deleted, *cur)
		}
		if len(deleted) == 0 {
			return errNothingToDelete // takes no revision, wakes nobody
		}
		rev = r
		return nil
	}, func() {
		for _, sp := range deleted {
			delete(s.specs, sp.ID())
			s.history.Add(desired.Change{Revision: rev, ID: sp.ID()})
		}
	})
	if errors.Is(err, errNothingToDelete) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("delete %d streams: %w", len(items), err)
	}
	return deleted, rev, nil
}

// errNothingToDelete ends a DeleteMany that finds no stream to delete.
var errNothingToDelete = errors.New("nothing to delete")

// Allocate stores sp on the first port in [lo, hi] that has no stream of
// sp's protocol and for which busy returns false, all in one transaction,
// so that two concurrent calls never get the same port.
func (s *Store) Allocate(sp stream.Spec, lo, hi int, busy func(port int) bool) (stream.Spec, error) {
	var stored stream.Spec
	err := s.update(func(tx *bolt.Tx, rev uint64) error {
		for port := lo; port <= hi; port++ {
			sp.Listen = port
			cur, err := get(tx, sp.ID())
			if err != nil {
				return err
			}
			if cur != nil || (busy != nil && busy(port)) {
				continue
			}
			if s.hasRanges.Load() {
				o, err := overlapping(tx, sp)
				if err != nil {
					return err
				}
				if o != nil {
					port = o.LastPort() // past the range
					continue
				}
			}
			stored = s.stamp(sp, nil, rev)
			return put(tx, stored)
		}
		return ErrNoFreePort
	}, func() {
		s.specs[stored.ID()] = stored.Clone()
		s.history.Add(desired.Change{Revision: stored.Revision, ID: stored.ID(), Spec: ptr(stored.Clone())})
	})
	if err != nil {
		return stream.Spec{}, fmt.Errorf("allocate %s port in %d-%d: %w", sp.Protocol, lo, hi, err)
	}
	return stored, nil
}

func (s *Store) stamp(sp stream.Spec, cur *stream.Spec, rev uint64) stream.Spec {
	sp = sp.Clone()
	now := s.now().UTC()
	sp.Revision, sp.UpdatedAt, sp.CreatedAt = rev, now, now
	if cur != nil {
		sp.CreatedAt = cur.CreatedAt
	}
	return sp
}

// rebuildList refreshes the sorted list; callers hold s.mu for writing.
func (s *Store) rebuildList() {
	l := make([]stream.Spec, 0, len(s.specs))
	for _, sp := range s.specs {
		l = append(l, sp)
	}
	slices.SortFunc(l, func(a, b stream.Spec) int {
		if a.Protocol != b.Protocol {
			if a.Protocol < b.Protocol {
				return -1
			}
			return 1
		}
		return a.Listen - b.Listen
	})
	s.list, s.listValid = l, true
}

func get(tx *bolt.Tx, id stream.ID) (*stream.Spec, error) {
	v := tx.Bucket(bucketStreams).Get([]byte(id.String()))
	if v == nil {
		return nil, nil
	}
	var sp stream.Spec
	if err := json.Unmarshal(v, &sp); err != nil {
		return nil, fmt.Errorf("decode stream %q: %w", id, err)
	}
	return &sp, nil
}

func put(tx *bolt.Tx, sp stream.Spec) error {
	v, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketStreams).Put([]byte(sp.ID().String()), v)
}

func revision(meta *bolt.Bucket) uint64 {
	v := meta.Get(keyRevision)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
