package store

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// op is one write waiting for the commit loop.
type op struct {
	fn    func(tx *bolt.Tx, rev uint64) error
	apply func()
	done  chan error
	// sideline ops (audit entries) change no desired state: they take no
	// revision and notify nobody.
	sideline bool
}

var errNothingToCommit = errors.New("nothing to commit")

// maxBatch bounds how many writes share one transaction.
const maxBatch = 1000

// update runs fn in a write transaction with the next revision, stores that
// revision, commits (fsync), then applies the change to memory with apply
// and notifies Changes. Nothing is applied when fn or the commit fails.
// Concurrent writes are grouped by the commit loop into one transaction,
// so they share one fsync; each still gets its own revision, in order.
func (s *Store) update(fn func(tx *bolt.Tx, rev uint64) error, apply func()) error {
	return s.enqueue(&op{fn: fn, apply: apply, done: make(chan error, 1)})
}

// enqueue hands o to the commit loop and waits for its outcome.
func (s *Store) enqueue(o *op) error {
	select {
	case s.ops <- o:
	case <-s.closing:
		return ErrClosed
	}
	return <-o.done
}

// commitLoop is the only writer: it takes every write that is waiting and
// commits them together.
func (s *Store) commitLoop() {
	defer close(s.loopDone)
	for {
		var batch []*op
		select {
		case o := <-s.ops:
			batch = append(batch, o)
		case <-s.closing:
			return
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		s.commit(batch)
	}
}

// commit runs a batch in one transaction. An op that fails its own checks
// has written nothing (every op checks before it writes) and fails alone;
// a failed commit fails them all.
//
// A write is acknowledged only if the file it went into is still the one
// at the store's path (see Check), before and after the commit.
func (s *Store) commit(batch []*op) {
	if err := s.Check(); err != nil {
		failAll(batch, err)
		return
	}
	results := make([]error, len(batch))
	done := make([]bool, len(batch)) // the op wrote its part
	var rev uint64
	ok, changed := 0, 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		rev = revision(meta)
		for i, o := range batch {
			if results[i] = o.fn(tx, rev+1); results[i] != nil {
				continue
			}
			done[i] = true
			ok++
			if !o.sideline {
				rev++
				changed++
			}
		}
		if ok == 0 {
			return errNothingToCommit // roll back: no fsync, no notification
		}
		if changed == 0 {
			return nil
		}
		return meta.Put(keyRevision, u64(rev))
	})
	if errors.Is(err, errNothingToCommit) {
		for i, o := range batch {
			o.done <- results[i]
		}
		return
	}
	if err != nil {
		failAll(batch, err)
		return
	}
	// Committed, but the file may have gone from the path meanwhile: the
	// writes are in the file the daemon has open (and so in GET
	// /v1/backup), so memory follows them; the clients are told the file
	// is detached, not that nothing was stored.
	if afterCommit != nil {
		afterCommit()
	}
	detached := s.Check()
	if detached != nil {
		for i := range results {
			if results[i] == nil {
				results[i] = fmt.Errorf("%w (this write is in the detached file, and so in GET /v1/backup)", detached)
			}
		}
	}
	if changed > 0 {
		s.mu.Lock()
		for i, o := range batch {
			if done[i] && o.apply != nil {
				o.apply()
			}
		}
		s.rev = rev
		s.listValid = false
		close(s.updated)
		s.updated = make(chan struct{})
		s.mu.Unlock()
		select {
		case s.changes <- struct{}{}:
		default:
		}
	}
	for i, o := range batch {
		o.done <- results[i]
	}
}

// afterCommit, set only by tests, runs between a commit and the check
// that its file is still at the path.
var afterCommit func()

func failAll(batch []*op, err error) {
	for _, o := range batch {
		o.done <- err
	}
}
