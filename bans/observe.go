package bans

import (
	"container/list"
	"fmt"
	"net/netip"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// track is the recent failure times of one (stream, address) pair,
// oldest first, at most the policy's After.
type track struct {
	key   key
	times []time.Time
}

// Counts reports whether a session that ended with status counts
// against its source, on a stream that limits each client's sessions
// (perClient) or not: the source did something wrong, not the backend
// or another client.
//   - 400: nginx could not make sense of what the client sent.
//   - 503: a connection limit refused it. That is the source's doing only
//     when the stream has a per-client limit; a stream-wide limit alone
//     is filled by everyone (an attacker holding every slot would get the
//     others banned).
//
// Not counted: 403 (nginx's access rules refused it already: a ban, an
// allow or deny list), and 500 and 502 (nginx or the backend failed:
// clients retrying through a backend's restart are not attackers).
func Counts(status int, perClient bool) bool {
	return status == 400 || status == 503 && perClient
}

// Bannable reports whether addr can be written as a source in nginx's
// deny directive: a valid address, without an IPv6 zone, not 0.0.0.0 or
// :: (which nginx would take as no address at all). A bans file edited by
// hand may hold others; they are dropped when it is loaded.
func Bannable(addr netip.Addr) bool {
	return addr.IsValid() && addr.Zone() == "" && !addr.IsUnspecified()
}

// Observe is told of a session of stream id from addr that ended with
// status at now (traffic.Collector.OnSession). Once the stream's policy
// says enough of addr's sessions failed, addr is banned at the next
// flush. Never banned: exempt addresses (Exempt), and every address of a
// stream with an allow list (those it allows are trusted, nginx refuses
// the others already).
func (m *Manager) Observe(id stream.ID, addr netip.Addr, status int, now time.Time) {
	addr = addr.Unmap()
	if status != 400 && status != 503 || !Bannable(addr) || m.Exempt(addr) {
		return // the common case, without the lock: a session that went well
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.streams[id]
	if !ok || p.ban == nil || p.trusted || !Counts(status, p.perClient) || m.bans[id][addr] != nil {
		return
	}
	k := key{id, addr}
	e := m.tracks[k]
	if e == nil {
		e = m.lru.PushFront(&track{key: k})
		m.tracks[k] = e
	} else {
		m.lru.MoveToFront(e)
	}
	t := e.Value.(*track)
	before := len(t.times)
	t.times = recent(t.times, now.Add(-p.within), p.ban.After-1)
	t.times = append(t.times, now)
	m.times += len(t.times) - before
	if len(t.times) >= p.ban.After {
		m.ban(id, addr, now, p, len(t.times))
		m.forget(k, e)
	}
	m.bound()
}

// recent returns of times (oldest first) those after cutoff, at most the
// last keep, reusing the slice.
func recent(times []time.Time, cutoff time.Time, keep int) []time.Time {
	i := 0
	for i < len(times) && !times[i].After(cutoff) {
		i++
	}
	i = max(i, len(times)-keep)
	n := copy(times, times[i:])
	return times[:n]
}

// forget drops a pair's failures; m.mu is held.
func (m *Manager) forget(k key, e *list.Element) {
	m.times -= len(e.Value.(*track).times)
	m.lru.Remove(e)
	delete(m.tracks, k)
}

// bound forgets the pairs that failed least recently until the tracks
// are within their bounds; m.mu is held.
func (m *Manager) bound() {
	for len(m.tracks) > m.cfg.MaxTracked || m.times > m.cfg.MaxTimes {
		e := m.lru.Back()
		m.forget(e.Value.(*track).key, e)
	}
}

// ban bans addr from stream id from now on, after failures failed
// sessions, unless the stream holds MaxPerStream bans; m.mu is held.
func (m *Manager) ban(id stream.ID, addr netip.Addr, now time.Time, p policy, failures int) {
	bs := m.bans[id]
	if len(bs) >= m.cfg.MaxPerStream {
		if !m.capped[id] {
			m.capped[id] = true
			m.log.Warn().Stringer("stream", id).Int("max", m.cfg.MaxPerStream).Stringer("address", addr).
				Msg("the stream holds the most bans it may: no more are made until some end")
		}
		return
	}
	if bs == nil {
		bs = map[netip.Addr]*Ban{}
		m.bans[id] = bs
	}
	b := &Ban{Stream: id, Address: addr, Since: now, Until: now.Add(p.dur), Failures: failures,
		Reason: fmt.Sprintf("%d failed sessions within %s", failures, p.ban.Within), StreamCreated: p.created}
	bs[addr] = b
	m.count++
	m.total++
	m.dirty[id] = true
	m.added = append(m.added, *b)
	if m.earliest.IsZero() || b.Until.Before(m.earliest) {
		m.earliest = b.Until
	}
	m.poke()
}

// end ends the ban of addr from stream id for why; m.mu is held.
func (m *Manager) end(id stream.ID, addr netip.Addr, why string) {
	b := m.bans[id][addr]
	if b == nil {
		return
	}
	delete(m.bans[id], addr)
	if len(m.bans[id]) == 0 {
		delete(m.bans, id)
	}
	delete(m.capped, id)
	m.count--
	m.dirty[id] = true
	m.lifted = append(m.lifted, ended{Ban: *b, why: why})
	m.poke()
}

// expire ends the bans whose time is up at now; m.mu is held. It looks
// at every ban only when the earliest one is due.
func (m *Manager) expire(now time.Time) {
	if m.earliest.IsZero() || now.Before(m.earliest) {
		return
	}
	m.earliest = time.Time{}
	for id, bs := range m.bans {
		for addr, b := range bs {
			switch {
			case !now.Before(b.Until):
				m.end(id, addr, ReasonExpired)
			case m.earliest.IsZero() || b.Until.Before(m.earliest):
				m.earliest = b.Until
			}
		}
	}
}
