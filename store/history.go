package store

import (
	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// Since returns the changes after revision after, in revision order, or
// ErrCompacted when they are older than the last desired.HistorySize changes or
// than this process's opening of the file.
func (s *Store) Since(after uint64) ([]desired.Change, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if after >= s.rev {
		return nil, nil
	}
	return s.history.Since(after)
}

// Updated returns a channel closed at the next commit of a write. Any
// number of goroutines may wait on it; take it before calling Since.
func (s *Store) Updated() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.updated
}

func ptr(sp stream.Spec) *stream.Spec { return &sp }
