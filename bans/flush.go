package bans

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/stream"
)

// Run flushes and expires bans until ctx ends: a flush when bans changed,
// at most one per FlushInterval, and a timer at the earliest end of a
// ban (not a poll). At the end it flushes what is not flushed yet.
func (m *Manager) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := m.step(m.cfg.Now())
		timer.Stop()
		var fire <-chan time.Time
		if !next.IsZero() {
			timer.Reset(max(0, next.Sub(m.cfg.Now())))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			// A last flush, whatever the interval: the bans made since
			// the last one are written, audited and published.
			m.mu.Lock()
			m.flushNow = true
			m.mu.Unlock()
			m.step(m.cfg.Now())
			return
		case <-m.wake:
		case <-fire:
		}
	}
}

// step expires the bans due at now and flushes if something changed and
// the last flush is FlushInterval old. It returns when it must run next
// (zero: only when woken).
func (m *Manager) step(now time.Time) (next time.Time) {
	m.mu.Lock()
	m.expire(now)
	if len(m.dirty) == 0 && !m.saveFailed {
		defer m.mu.Unlock()
		return m.earliest
	}
	if due := m.lastFlush.Add(m.interval); now.Before(due) && !m.flushNow {
		defer m.mu.Unlock()
		return earlier(due, m.earliest)
	}
	m.interval = nextInterval(m.interval, now.Sub(m.lastFlush))
	m.lastFlush, m.flushNow = now, false
	added, lifted, changed := m.added, m.lifted, m.publish()
	m.added, m.lifted = nil, nil
	next = m.earliest
	m.mu.Unlock()

	m.save()
	if len(changed) > 0 && m.cfg.Trigger != nil {
		m.cfg.Trigger()
	}
	m.report(added, lifted)
	return next
}

// nextInterval is the wait after a flush that came since after the one
// before: doubled (up to MaxFlushInterval) when that one was due as soon
// as it could be, back to FlushInterval after a quiet MaxFlushInterval.
func nextInterval(cur, since time.Duration) time.Duration {
	if cur == 0 || since >= MaxFlushInterval+cur {
		return FlushInterval
	}
	return min(2*cur, MaxFlushInterval)
}

// earlier is the earlier of a and b, a zero time being none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// publish makes the bans of the streams that changed since the last
// flush what the reconciler renders, under a new version, and returns
// those streams; m.mu is held.
func (m *Manager) publish() []stream.ID {
	if len(m.dirty) == 0 {
		return nil
	}
	m.version++
	changed := make([]stream.ID, 0, len(m.dirty))
	for id := range m.dirty {
		changed = append(changed, id)
		bs := m.bans[id]
		if _, exists := m.streams[id]; len(bs) == 0 && m.streams != nil && !exists {
			delete(m.pub, id) // the stream is gone
			delete(m.applied, id)
			continue
		}
		sorted := slices.SortedFunc(maps.Keys(bs), netip.Addr.Compare)
		addrs := make([]string, len(sorted))
		for i, a := range sorted {
			addrs[i] = a.String()
		}
		m.pub[id] = published{addrs: addrs, version: m.version}
	}
	clear(m.dirty)
	return changed
}

// report audits the bans made, logs and publishes the events of what a
// flush applied. Past events.MaxEach of a kind, one Bulk event says how
// many.
func (m *Manager) report(added []Ban, lifted []ended) {
	for _, b := range added {
		m.log.Info().Stringer("stream", b.Stream).Stringer("address", b.Address).Time("until", b.Until).
			Int("failures", b.Failures).Msg("banned")
	}
	for _, e := range lifted {
		m.log.Info().Stringer("stream", e.Stream).Stringer("address", e.Address).Str("reason", e.why).Msg("ban ended")
	}
	m.audit(added)
	if m.cfg.Events == nil {
		return
	}
	if len(added) > events.MaxEach || len(lifted) > events.MaxEach {
		m.cfg.Events.Publish(events.Bulk, events.BulkChange{What: "bans", Counts: map[string]int{"added": len(added), "lifted": len(lifted)}})
		return
	}
	for _, b := range added {
		m.cfg.Events.Publish(events.BanAdded, m.change(b, b.Reason))
	}
	for _, e := range lifted {
		m.cfg.Events.Publish(events.BanLifted, m.change(e.Ban, e.why))
	}
}

// change is b as an event says it.
func (m *Manager) change(b Ban, reason string) events.BanChange {
	return events.BanChange{Stream: b.Stream, Address: b.Address.String(), Node: m.cfg.Node, Since: b.Since, Until: b.Until,
		Failures: b.Failures, Reason: reason}
}

// maxAuditAddrs is the most addresses one audit record names: a flood of
// bans makes one record per stream and flush, whose size is bounded, so
// that it cannot push the rest of the audit log out.
const maxAuditAddrs = 16

// audit records the bans of one flush, one record per stream. The
// record's actor is empty: the daemon acted of itself. Their ends are
// not audited: when a ban ends was recorded when it was made (or, lifted
// through the API, by the API's own record).
func (m *Manager) audit(added []Ban) {
	if m.cfg.Audit == nil || len(added) == 0 {
		return
	}
	by := map[stream.ID][]Ban{}
	var ids []stream.ID
	for _, b := range added {
		if by[b.Stream] == nil {
			ids = append(ids, b.Stream)
		}
		by[b.Stream] = append(by[b.Stream], b)
	}
	for _, id := range ids {
		rec := desired.AuditRecord{Time: m.cfg.Now().UTC(), Operation: desired.OpBan, Stream: id.String(),
			Result: auditResult(by[id], m.cfg.Node)}
		if err := m.cfg.Audit(rec); err != nil {
			m.log.Error().Err(err).Stringer("stream", id).Msg("audit log: bans")
		}
	}
}

// auditResult says what bans were made: "banned 127.0.0.3 until ... (3
// failed sessions within 1m0s)", at most maxAuditAddrs of them.
func auditResult(bs []Ban, node string) string {
	var parts []string
	for i, b := range bs {
		if i == maxAuditAddrs {
			parts = append(parts, fmt.Sprintf("and %d more", len(bs)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("%s until %s (%s)", b.Address, b.Until.UTC().Format(time.RFC3339), b.Reason))
	}
	s := "banned " + strings.Join(parts, ", ")
	if node != "" {
		s += " on node " + node
	}
	return s
}
