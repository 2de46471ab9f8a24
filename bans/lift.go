package bans

import (
	"context"
	"net/netip"

	"github.com/streamconductor/stream-conductor/stream"
)

// Lift ends the ban of addr from stream id (ErrNotFound if there is
// none). It is flushed at once, not at the next FlushInterval: the
// operator waits for it. The returned version is the one to WaitApplied
// for.
func (m *Manager) Lift(id stream.ID, addr netip.Addr) (version uint64, err error) {
	addr = addr.Unmap()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bans[id][addr] == nil {
		return 0, ErrNotFound
	}
	m.end(id, addr, ReasonAPI)
	m.flushNow = true
	return m.version + 1, nil
}

// LiftAll ends every ban of stream id and returns how many there were,
// and the version to WaitApplied for (0 when there were none: the bans
// may have ended by themselves since the caller listed them).
func (m *Manager) LiftAll(id stream.ID) (n int, version uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for addr := range m.bans[id] {
		m.end(id, addr, ReasonAPI)
		n++
	}
	if n == 0 {
		return 0, 0 // nothing to wait for: a version never published would never come
	}
	m.flushNow = true
	return n, m.version + 1
}

// WaitApplied waits until nginx runs stream id's file with bans of at
// least version (the flush after a Lift publishes one at least as high),
// or ctx ends (its error).
func (m *Manager) WaitApplied(ctx context.Context, id stream.ID, version uint64) error {
	for {
		m.mu.Lock()
		done, ch := m.applied[id] >= version, m.appliedCh
		m.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
