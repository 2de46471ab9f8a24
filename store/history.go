package store

import (
	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// historySize is how many changes the store keeps in memory for Since; a
// consumer that falls further behind lists the whole state again.
const historySize = 10000

// history is the latest changes, oldest first. Everything up to base is
// forgotten: at open, base is the revision the file was at.
type history struct {
	base    uint64
	changes []desired.Change
}

// add records c; callers hold the store's lock for writing.
func (h *history) add(c desired.Change) {
	h.changes = append(h.changes, c)
	if len(h.changes) < 2*historySize {
		return
	}
	drop := len(h.changes) - historySize
	h.base = max(h.base, h.changes[drop-1].Revision)
	h.changes = append([]desired.Change(nil), h.changes[drop:]...)
}

// since returns the changes after revision after, or ErrCompacted.
func (h *history) since(after uint64) ([]desired.Change, error) {
	if after < h.base {
		return nil, ErrCompacted
	}
	i := len(h.changes)
	for i > 0 && h.changes[i-1].Revision > after {
		i--
	}
	return append([]desired.Change(nil), h.changes[i:]...), nil
}

// Since returns the changes after revision after, in revision order, or
// ErrCompacted when they are older than the last historySize changes or
// than this process's opening of the file.
func (s *Store) Since(after uint64) ([]desired.Change, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if after >= s.rev {
		return nil, nil
	}
	return s.history.since(after)
}

// Updated returns a channel closed at the next commit of a write. Any
// number of goroutines may wait on it; take it before calling Since.
func (s *Store) Updated() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.updated
}

func ptr(sp stream.Spec) *stream.Spec { return &sp }
