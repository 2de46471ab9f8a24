// Package bans decides, keeps, expires and persists automatic bans: a
// stream whose spec has a ban policy (stream.BanPolicy) bans a source
// address once enough of its sessions failed or were refused within the
// policy's window, as nginx's session log tells (traffic.Collector's
// OnSession hook feeds Observe).
//
// A ban is applied as a deny line in the stream's file (nginxconf
// RenderOptions.Banned) and a reload of the stream's master: nginx open
// source has no access list that changes at run time. To keep a flood of
// bans from becoming a flood of reloads, new bans and ends of bans are
// collected and flushed at most once per FlushInterval: one write of the
// bans file, then one trigger of the reconciler, which re-renders only
// the streams whose bans changed (Banned's version). While bans keep
// coming, the interval doubles at each flush up to MaxFlushInterval, so
// that a steady trickle of bans does not reload a master every second
// (each reload leaves old workers serving their open sessions); it is
// back to FlushInterval after a quiet MaxFlushInterval.
//
// Bans are node-local, also in a fleet: they come from this node's own
// session log, and are kept in a file of this node's data directory.
package bans

import (
	"container/list"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/stream"
)

// Why a ban ended (events.BanChange's Reason).
const (
	ReasonExpired       = "expired"
	ReasonAPI           = "api"
	ReasonStreamDeleted = "stream_deleted"
	// ReasonStreamChanged: the stream's ban policy was removed, or it
	// got an allow list (which trusts or refuses every address).
	ReasonStreamChanged = "stream_changed"
)

// Bounds, so that a flood from many sources (IPv6 makes that cheap)
// cannot grow memory without bound.
const (
	// DefaultMaxTracked is the most (stream, address) pairs whose recent
	// failures are kept; past it the pair that failed least recently is
	// forgotten.
	DefaultMaxTracked = 65536
	// DefaultMaxTimes is the most failure times kept over all pairs
	// (8 bytes each, plus slice overhead).
	DefaultMaxTimes = 1 << 20
	// DefaultMaxPerStream is the most bans one stream holds; past it no
	// new ban is made (and that is logged): each is a line nginx reads
	// on every reload.
	DefaultMaxPerStream = 10000
	// FlushInterval is the most often bans are written and applied.
	FlushInterval = time.Second
	// MaxFlushInterval is the longest a new ban waits for its flush
	// while bans keep coming.
	MaxFlushInterval = 30 * time.Second
)

// ErrNotFound means there is no such ban.
var ErrNotFound = errors.New("no such ban")

// Ban is one source address banned from one stream.
type Ban struct {
	Stream   stream.ID  `json:"stream"`
	Address  netip.Addr `json:"address"`
	Since    time.Time  `json:"since"`
	Until    time.Time  `json:"until"`
	Failures int        `json:"failures"`
	// Reason says what made it: "3 failed sessions within 1m0s".
	Reason string `json:"reason"`
	// StreamCreated is when the stream it bans from was created: a
	// stream deleted and created again under the same id is another
	// stream, without the bans of the first.
	StreamCreated time.Time `json:"stream_created"`
}

// Config configures a Manager.
type Config struct {
	// File is where bans are kept across restarts ($DATA_DIR/bans.json);
	// empty: not kept.
	File string
	// Exempt are never banned (BAN_EXEMPT), beside 127.0.0.1 and ::1.
	Exempt []netip.Prefix
	// Node names this node in audit records and events.
	Node string
	// Trigger asks the reconciler for a pass after a flush changed bans.
	Trigger func()
	// Audit, when set, records the bans the daemon makes.
	Audit  func(desired.AuditRecord) error
	Events events.Publisher
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Bounds; zero means the default.
	MaxTracked, MaxTimes, MaxPerStream int
	Log                                zerolog.Logger
}

// policy is what the manager knows of a stream.
type policy struct {
	ban     *stream.BanPolicy
	within  time.Duration
	dur     time.Duration
	trusted bool // an allow list: nginx trusts or refuses every address
	// perClient: the stream limits each client's sessions, so a 503 is
	// the client's own doing (see Counts).
	perClient bool
	created   time.Time
}

// key is a (stream, address) pair.
type key struct {
	id   stream.ID
	addr netip.Addr
}

// published is a stream's bans as the reconciler renders them.
type published struct {
	addrs   []string
	version uint64
}

// ended is a ban that ended, and why.
type ended struct {
	Ban
	why string
}

// Manager decides, keeps, expires and persists bans. Create it with New,
// feed it with Observe and SetStreams, and run it with Run; every method
// is safe from any goroutine.
type Manager struct {
	cfg  Config
	log  zerolog.Logger
	wake chan struct{}

	mu      sync.Mutex
	streams map[stream.ID]policy // nil until the first SetStreams
	bans    map[stream.ID]map[netip.Addr]*Ban
	count   int
	total   uint64
	// earliest is the soonest Until of any ban (zero: none), or earlier.
	earliest time.Time
	tracks   map[key]*list.Element // of *track, in lru
	lru      *list.List            // most recent failure first
	times    int                   // failure times kept over all tracks
	capped   map[stream.ID]bool    // at MaxPerStream, logged
	// Changes since the last flush.
	dirty      map[stream.ID]bool
	added      []Ban
	lifted     []ended
	saveFailed bool
	lastFlush  time.Time
	interval   time.Duration // from lastFlush to the next flush (see FlushInterval)
	// flushNow: the next step flushes whatever the interval: an operator
	// lifted a ban (bans, made by traffic, are batched), or Run ends.
	flushNow bool
	// What the reconciler renders, and what it applied.
	pub       map[stream.ID]published
	version   uint64
	applied   map[stream.ID]uint64
	appliedCh chan struct{} // closed and replaced when applied moves
}

// New returns a manager with the bans of cfg.File that have not expired.
// A file that cannot be read is logged and set aside
// (<file>.damaged): the manager starts without bans rather than keeping
// the daemon from starting, since a lost ban is made again by the
// failures that made it.
func New(cfg Config) *Manager {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxTracked <= 0 {
		cfg.MaxTracked = DefaultMaxTracked
	}
	if cfg.MaxTimes <= 0 {
		cfg.MaxTimes = DefaultMaxTimes
	}
	if cfg.MaxPerStream <= 0 {
		cfg.MaxPerStream = DefaultMaxPerStream
	}
	m := &Manager{
		cfg: cfg, log: cfg.Log.With().Str("component", "bans").Logger(),
		wake:   make(chan struct{}, 1),
		bans:   map[stream.ID]map[netip.Addr]*Ban{},
		tracks: map[key]*list.Element{}, lru: list.New(),
		capped: map[stream.ID]bool{}, dirty: map[stream.ID]bool{},
		pub: map[stream.ID]published{}, applied: map[stream.ID]uint64{}, appliedCh: make(chan struct{}),
	}
	m.load()
	return m
}

// poke wakes Run without blocking.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Exempt reports whether addr is never banned: the host's own loopback
// address (127.0.0.1, ::1: local tools and health probes; the rest of
// 127/8 may be banned) or an address of BAN_EXEMPT.
func (m *Manager) Exempt(addr netip.Addr) bool {
	addr = addr.Unmap()
	if addr == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || addr == netip.IPv6Loopback() {
		return true
	}
	return slices.ContainsFunc(m.cfg.Exempt, func(p netip.Prefix) bool { return p.Contains(addr) })
}

// SetStreams tells the manager the whole desired state (from the
// reconciler's listing; it does not block). Bans of streams deleted (or
// deleted and created again), or whose policy was removed, end at the
// next flush.
func (m *Manager) SetStreams(specs []stream.Spec) {
	idx := make(map[stream.ID]policy, len(specs))
	for _, s := range specs {
		p := policy{ban: s.Ban, trusted: len(s.Allow) > 0, perClient: s.MaxConnectionsPerClient > 0, created: s.CreatedAt}
		if s.Ban != nil {
			var errW, errF error
			p.within, errW = time.ParseDuration(s.Ban.Within)
			p.dur, errF = time.ParseDuration(s.Ban.For)
			if errW != nil || errF != nil || p.within <= 0 || p.dur <= 0 || s.Ban.After < 1 {
				// Validation refuses such a policy; a state restored
				// from elsewhere may still hold one. It bans nobody.
				m.log.Warn().Stringer("stream", s.ID()).Interface("ban", s.Ban).Msg("the stream's ban policy is not valid: it bans nobody")
				p.ban = nil
			}
		}
		idx[s.ID()] = p
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.streams = idx
	for id, bs := range m.bans {
		p, ok := idx[id]
		why := ""
		switch {
		case !ok || len(bs) > 0 && !p.created.Equal(anyBan(bs).StreamCreated):
			why = ReasonStreamDeleted
		case p.ban == nil || p.trusted:
			why = ReasonStreamChanged
		}
		if why != "" {
			for addr := range bs {
				m.end(id, addr, why)
			}
		}
	}
	for k, e := range m.tracks {
		if p, ok := idx[k.id]; !ok || p.ban == nil || p.trusted {
			m.forget(k, e)
		}
	}
	for id := range m.pub {
		if _, ok := idx[id]; !ok {
			m.dirty[id] = true // its published bans go with it
		}
	}
}

// anyBan returns one of bs.
func anyBan(bs map[netip.Addr]*Ban) *Ban {
	for _, b := range bs {
		return b
	}
	return nil
}

// Banned returns the addresses banned from stream id as the reconciler
// renders them (sorted; the last flush's), and a version that changes
// whenever they do (0: never any).
func (m *Manager) Banned(id stream.ID) (addrs []string, version uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.pub[id]
	return p.addrs, p.version
}

// Applied tells the manager that nginx runs stream id's file rendered
// with the bans of version.
func (m *Manager) Applied(id stream.ID, version uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if version <= m.applied[id] {
		return
	}
	m.applied[id] = version
	close(m.appliedCh)
	m.appliedCh = make(chan struct{})
}

// List returns the bans in force, of stream id only when id is not nil,
// ordered by stream and address.
func (m *Manager) List(id *stream.ID) []Ban {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Ban
	for sid, bs := range m.bans {
		if id != nil && sid != *id {
			continue
		}
		for _, b := range bs {
			out = append(out, *b)
		}
	}
	slices.SortFunc(out, func(a, b Ban) int {
		if c := compareIDs(a.Stream, b.Stream); c != 0 {
			return c
		}
		return a.Address.Compare(b.Address)
	})
	return out
}

func compareIDs(a, b stream.ID) int {
	if a.Protocol != b.Protocol {
		if a.Protocol < b.Protocol {
			return -1
		}
		return 1
	}
	return a.Port - b.Port
}

// Stats returns the bans in force and the bans made since start.
func (m *Manager) Stats() (current int, total uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count, m.total
}
