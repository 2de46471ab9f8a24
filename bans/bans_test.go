package bans

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/stream"
)

var (
	tcp9000  = stream.MustParseID("tcp/9000")
	t0       = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	attacker = netip.MustParseAddr("127.0.0.3")
)

// recorder keeps what a manager published, audited and triggered.
type recorder struct {
	mu       sync.Mutex
	events   []string // "type stream address reason"
	audits   []desired.AuditRecord
	triggers int
}

func (r *recorder) Publish(typ string, data any) events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch d := data.(type) {
	case events.BanChange:
		r.events = append(r.events, fmt.Sprintf("%s %s %s %s", typ, d.Stream, d.Address, d.Reason))
	case events.BulkChange:
		r.events = append(r.events, fmt.Sprintf("%s %s %v", typ, d.What, d.Counts))
	}
	return events.Event{}
}

// harness is a manager on a fake clock with stream tcp/9000 banning
// after 3 failures within 1m for 1h.
type harness struct {
	*Manager
	rec *recorder
	now time.Time
}

func spec(id stream.ID, ban *stream.BanPolicy, allow ...string) stream.Spec {
	return stream.Spec{Protocol: id.Protocol, Listen: id.Port, Backends: []string{"127.0.0.1:2000"}, Allow: allow, Ban: ban, CreatedAt: t0}
}

var policy3 = &stream.BanPolicy{After: 3, Within: "1m0s", For: "1h0m0s"}

func newHarness(t *testing.T, cfg Config, specs ...stream.Spec) *harness {
	t.Helper()
	h := &harness{rec: &recorder{}, now: t0}
	cfg.Now = func() time.Time { return h.now }
	cfg.Events = h.rec
	cfg.Trigger = func() { h.rec.mu.Lock(); h.rec.triggers++; h.rec.mu.Unlock() }
	cfg.Audit = func(a desired.AuditRecord) error { h.rec.audits = append(h.rec.audits, a); return nil }
	h.Manager = New(cfg)
	if specs == nil {
		specs = []stream.Spec{spec(tcp9000, policy3)}
	}
	h.SetStreams(specs)
	return h
}

// fail makes n failed sessions of addr on id, one a second.
func (h *harness) fail(id stream.ID, addr netip.Addr, n int) {
	for range n {
		h.Observe(id, addr, 400, h.now)
		h.now = h.now.Add(time.Second)
	}
}

func (h *harness) banned(id stream.ID) []string {
	a, _ := h.Banned(id)
	return a
}

func TestBanAfterThresholdWithinWindow(t *testing.T) {
	h := newHarness(t, Config{})
	h.fail(tcp9000, attacker, 2)
	h.now = h.now.Add(time.Minute) // the first two fall out of the window
	h.fail(tcp9000, attacker, 2)
	if l := h.List(nil); len(l) != 0 {
		t.Fatalf("banned after 2 failures within the window: %v", l)
	}
	h.fail(tcp9000, attacker, 1)
	l := h.List(nil)
	if len(l) != 1 || l[0].Address != attacker || l[0].Failures != 3 || !l[0].Until.Equal(l[0].Since.Add(time.Hour)) {
		t.Fatalf("bans = %+v", l)
	}
	if got := h.banned(tcp9000); got != nil {
		t.Fatalf("rendered before the flush: %v", got)
	}
	h.step(h.now)
	addrs, v := h.Banned(tcp9000)
	if !slices.Equal(addrs, []string{"127.0.0.3"}) || v == 0 || h.rec.triggers != 1 {
		t.Fatalf("after the flush: %v version %d, %d triggers", addrs, v, h.rec.triggers)
	}
	if !slices.Equal(h.rec.events, []string{"ban.added tcp/9000 127.0.0.3 3 failed sessions within 1m0s"}) {
		t.Errorf("events = %v", h.rec.events)
	}
	if len(h.rec.audits) != 1 || h.rec.audits[0].Operation != desired.OpBan || h.rec.audits[0].Actor != "" || h.rec.audits[0].Stream != "tcp/9000" {
		t.Errorf("audits = %+v", h.rec.audits)
	}
	h.fail(tcp9000, attacker, 5) // refused by the ban: not counted again
	if n, total := h.Stats(); n != 1 || total != 1 {
		t.Errorf("stats = %d, %d", n, total)
	}
}

// Only failures and refusals count, and not 403: nginx's access rules
// refused that session already (the ban itself, or an allow list).
func TestBanCountsOnlyFailures(t *testing.T) {
	limited := stream.MustParseID("tcp/9001")
	perClient := spec(limited, policy3)
	perClient.MaxConnectionsPerClient = 1
	wide := spec(tcp9000, policy3)
	wide.MaxConnections = 10
	h := newHarness(t, Config{}, wide, perClient)
	// A stream-wide limit, nginx's or the backend's failures, access
	// rules: none is the source's doing.
	for _, st := range []int{200, 200, 403, 403, 403, 399, 500, 500, 502, 502, 502, 503, 503, 503, 504} {
		h.Observe(tcp9000, attacker, st, h.now)
	}
	if len(h.List(nil)) != 0 {
		t.Fatalf("banned for sessions that were not its failures: %v", h.List(nil))
	}
	for _, st := range []int{400, 400, 400} {
		h.Observe(tcp9000, attacker, st, h.now)
	}
	for _, st := range []int{503, 503, 503} { // the per-client limit refused it
		h.Observe(limited, attacker, st, h.now)
	}
	if len(h.List(nil)) != 2 {
		t.Fatalf("bans %v; want the source banned from both streams: 400s, and 503s of a per-client limit", h.List(nil))
	}
}

// 127.0.0.1 and ::1 (also IPv4-mapped), BAN_EXEMPT, every address of a
// stream with an allow list, and streams without a policy never ban.
func TestBanNeverExempt(t *testing.T) {
	allowed := stream.MustParseID("tcp/9001")
	nopolicy := stream.MustParseID("tcp/9002")
	h := newHarness(t, Config{Exempt: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		spec(tcp9000, policy3), spec(allowed, policy3, "127.0.0.3/32"), spec(nopolicy, nil))
	for _, a := range []string{"127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3"} {
		h.fail(tcp9000, netip.MustParseAddr(a), 10)
	}
	h.fail(allowed, attacker, 10)
	h.fail(allowed, netip.MustParseAddr("127.0.0.4"), 10)
	h.fail(nopolicy, attacker, 10)
	h.fail(stream.MustParseID("tcp/9003"), attacker, 10) // no such stream
	if l := h.List(nil); len(l) != 0 {
		t.Fatalf("banned: %+v", l)
	}
	h.fail(tcp9000, netip.MustParseAddr("127.0.0.2"), 3) // the rest of 127/8 may be banned
	if l := h.List(nil); len(l) != 1 {
		t.Fatalf("127.0.0.2 not banned: %+v", l)
	}
}

// Many bans at once make one flush and one trigger; more within the
// interval wait for the next, at FlushInterval after the last.
func TestBanFlushesAreBatched(t *testing.T) {
	h := newHarness(t, Config{})
	for i := range 70 { // more than events.MaxEach
		h.Observe(tcp9000, netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), 400, h.now)
		h.Observe(tcp9000, netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), 400, h.now)
		h.Observe(tcp9000, netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), 400, h.now)
	}
	h.step(h.now)
	if got := h.banned(tcp9000); len(got) != 70 || h.rec.triggers != 1 {
		t.Fatalf("%d banned, %d triggers", len(got), h.rec.triggers)
	}
	if !slices.Equal(h.rec.events, []string{"bulk bans map[added:70 lifted:0]"}) {
		t.Errorf("events = %v", h.rec.events)
	}
	h.fail(tcp9000, attacker, 3) // three seconds later: the interval passed
	h.now = h.now.Add(-2500 * time.Millisecond)
	next := h.step(h.now)
	if h.rec.triggers != 1 || !next.Equal(h.lastFlush.Add(FlushInterval)) {
		t.Fatalf("flushed within the interval (%d triggers), next %v", h.rec.triggers, next)
	}
	h.step(next)
	if got := h.banned(tcp9000); len(got) != 71 || h.rec.triggers != 2 {
		t.Fatalf("%d banned, %d triggers", len(got), h.rec.triggers)
	}
}

// A lift by the operator is flushed at once, even right after a flush of
// bans: the DELETE waits for it.
func TestLiftIsFlushedAtOnce(t *testing.T) {
	h := newHarness(t, Config{})
	h.fail(tcp9000, attacker, 3)
	h.step(h.now)
	if h.rec.triggers != 1 {
		t.Fatalf("%d triggers after the ban", h.rec.triggers)
	}
	h.now = h.now.Add(100 * time.Millisecond)
	if _, err := h.Lift(tcp9000, attacker); err != nil {
		t.Fatal(err)
	}
	h.step(h.now)
	if h.rec.triggers != 2 || len(h.banned(tcp9000)) != 0 {
		t.Fatalf("a lift 100 ms after a flush: %d triggers, %d banned; want it flushed at once", h.rec.triggers, len(h.banned(tcp9000)))
	}
}

// A ban ends by itself at its Until: step says to run then, and not
// before.
func TestBanExpiresAtItsTime(t *testing.T) {
	short := &stream.BanPolicy{After: 1, Within: "1m0s", For: "2s"}
	h := newHarness(t, Config{}, spec(tcp9000, short))
	h.Observe(tcp9000, attacker, 400, h.now)
	until := h.List(nil)[0].Until
	next := h.step(h.now)
	if !next.Equal(until) {
		t.Fatalf("next = %v, want the ban's end %v", next, until)
	}
	if h.step(until.Add(-time.Millisecond)); len(h.List(nil)) != 1 {
		t.Fatal("ended early")
	}
	if next := h.step(until); !next.IsZero() || len(h.List(nil)) != 0 || len(h.banned(tcp9000)) != 0 || h.rec.triggers != 2 {
		t.Fatalf("not ended at its time: next %v, %v, %d triggers", next, h.List(nil), h.rec.triggers)
	}
	if last := h.rec.events[len(h.rec.events)-1]; last != "ban.lifted tcp/9000 127.0.0.3 expired" {
		t.Errorf("event %q", last)
	}
}

// A flood from many sources keeps at most MaxTracked pairs and MaxTimes
// failure times; a stream holds at most MaxPerStream bans.
func TestBanBounds(t *testing.T) {
	h := newHarness(t, Config{MaxTracked: 100, MaxTimes: 150, MaxPerStream: 5},
		spec(tcp9000, &stream.BanPolicy{After: 1000, Within: "24h0m0s", For: "1h0m0s"}))
	for i := range 5000 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		h.Observe(tcp9000, a, 400, h.now)
		h.Observe(tcp9000, a, 400, h.now)
	}
	if len(h.tracks) > 100 || h.times > 150 || h.lru.Len() != len(h.tracks) {
		t.Fatalf("%d tracks, %d times", len(h.tracks), h.times)
	}
	h2 := newHarness(t, Config{MaxPerStream: 5})
	for i := range 10 {
		h2.fail(tcp9000, netip.AddrFrom4([4]byte{127, 0, 2, byte(i + 1)}), 3)
	}
	if n, _ := h2.Stats(); n != 5 {
		t.Fatalf("%d bans, want the cap 5", n)
	}
}

// Bans survive a restart through the file; expired ones are dropped at
// load; a damaged file is set aside and the manager starts empty.
func TestBanFileRoundTrip(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bans.json")
	h := newHarness(t, Config{File: file})
	h.fail(tcp9000, attacker, 3)
	h.now = h.now.Add(30 * time.Minute)
	h.fail(tcp9000, netip.MustParseAddr("2001:db8::9"), 3)
	h.step(h.now)
	want := h.List(nil)

	again := newHarness(t, Config{File: file})
	if got := again.List(nil); !slices.EqualFunc(got, want, func(a, b Ban) bool {
		return a.Address == b.Address && a.Until.Equal(b.Until) && a.Failures == b.Failures && a.Stream == b.Stream
	}) {
		t.Fatalf("loaded %+v, want %+v", got, want)
	}
	if got := again.banned(tcp9000); len(got) != 2 {
		t.Fatalf("loaded bans are not rendered: %v", got)
	}

	later := &harness{rec: &recorder{}, now: want[0].Until.Add(time.Second)}
	later.Manager = New(Config{File: file, Now: func() time.Time { return later.now }})
	if got := later.List(nil); len(got) != 1 || got[0].Address.String() != "2001:db8::9" {
		t.Fatalf("after the first ended: %+v", got)
	}

	if err := os.WriteFile(file, []byte(`{"version":1,"bans":[{`), 0o644); err != nil {
		t.Fatal(err)
	}
	damaged := New(Config{File: file})
	if len(damaged.List(nil)) != 0 {
		t.Fatal("bans from a damaged file")
	}
	if _, err := os.Stat(file + ".damaged"); err != nil {
		t.Errorf("the damaged file was not set aside: %v", err)
	}
}

// A bans file edited by hand may hold addresses nginx's deny would not
// take (an IPv6 zone, the unspecified address): they are dropped when it
// is loaded, so that they never reach a stream's file and fail it.
func TestBanFileDropsWhatNginxCannotDeny(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bans.json")
	until := t0.Add(time.Hour).Format(time.RFC3339)
	body := `{"version":1,"bans":[` +
		`{"stream":"tcp/9000","address":"fe80::1%eth0","until":"` + until + `"},` +
		`{"stream":"tcp/9000","address":"0.0.0.0","until":"` + until + `"},` +
		`{"stream":"tcp/9000","address":"::","until":"` + until + `"},` +
		`{"stream":"tcp/9000","address":"198.51.100.7","until":"` + until + `"}]}`
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Config{File: file})
	if got := h.banned(tcp9000); !slices.Equal(got, []string{"198.51.100.7"}) {
		t.Fatalf("loaded %v; want only 198.51.100.7", got)
	}
	h.Observe(tcp9000, netip.MustParseAddr("fe80::2%eth0"), 400, h.now)
	h.Observe(tcp9000, netip.MustParseAddr("fe80::2%eth0"), 400, h.now)
	h.Observe(tcp9000, netip.MustParseAddr("fe80::2%eth0"), 400, h.now)
	if got := h.banned(tcp9000); len(got) != 1 {
		t.Fatalf("a zoned source was banned: %v", got)
	}
}

// A deleted stream's bans end (also one deleted and created again), and
// so do those of a stream whose policy was removed.
func TestBanEndsWithItsStream(t *testing.T) {
	other := stream.MustParseID("udp/53")
	third := stream.MustParseID("tcp/9004")
	h := newHarness(t, Config{}, spec(tcp9000, policy3), spec(other, policy3), spec(third, policy3))
	h.fail(tcp9000, attacker, 3)
	h.fail(other, attacker, 3)
	h.fail(third, attacker, 3)
	h.step(h.now)
	recreated := spec(third, policy3)
	recreated.CreatedAt = t0.Add(time.Hour)
	h.SetStreams([]stream.Spec{spec(other, nil), recreated})
	h.now = h.now.Add(FlushInterval)
	h.step(h.now)
	if l := h.List(nil); len(l) != 0 {
		t.Fatalf("left: %+v", l)
	}
	if a, _ := h.Banned(other); len(a) != 0 {
		t.Errorf("udp/53 still renders %v", a)
	}
	events := slices.Clone(h.rec.events[3:])
	slices.Sort(events)
	want := []string{"ban.lifted tcp/9000 127.0.0.3 stream_deleted", "ban.lifted tcp/9004 127.0.0.3 stream_deleted", "ban.lifted udp/53 127.0.0.3 stream_changed"}
	if !slices.Equal(events, want) {
		t.Errorf("events = %v", events)
	}
}

// A lift is applied at the next flush, and WaitApplied returns once the
// reconciler says it applied that version.
func TestLiftWaitsUntilApplied(t *testing.T) {
	h := newHarness(t, Config{})
	h.fail(tcp9000, attacker, 3)
	h.step(h.now)
	if _, err := h.Lift(tcp9000, netip.MustParseAddr("127.0.0.9")); err != ErrNotFound {
		t.Fatalf("lift of no ban: %v", err)
	}
	v, err := h.Lift(tcp9000, netip.MustParseAddr("::ffff:127.0.0.3"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h.WaitApplied(ctx, tcp9000, v); err == nil {
		t.Fatal("applied before any flush")
	}
	h.now = h.now.Add(FlushInterval)
	h.step(h.now)
	addrs, pv := h.Banned(tcp9000)
	if len(addrs) != 0 || pv < v {
		t.Fatalf("after the flush: %v at %d, want none at %d or later", addrs, pv, v)
	}
	done := make(chan error, 1)
	go func() { done <- h.WaitApplied(context.Background(), tcp9000, v) }()
	h.Applied(tcp9000, pv)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitApplied did not return once applied")
	}
	if last := h.rec.events[len(h.rec.events)-1]; last != "ban.lifted tcp/9000 127.0.0.3 api" {
		t.Errorf("event %q", last)
	}
}

// Run flushes by itself, without being stepped: a ban made reaches
// Banned within about a FlushInterval.
func TestRunFlushes(t *testing.T) {
	m := New(Config{File: filepath.Join(t.TempDir(), "bans.json")})
	m.SetStreams([]stream.Spec{spec(tcp9000, &stream.BanPolicy{After: 1, Within: "1m0s", For: "1h0m0s"})})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	m.Observe(tcp9000, attacker, 400, time.Now())
	deadline := time.Now().Add(5 * time.Second)
	for len(m.banned(tcp9000)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("not flushed within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (m *Manager) banned(id stream.ID) []string {
	a, _ := m.Banned(id)
	return a
}

// A ban made within the flush interval before Run ends (the daemon
// stops) is flushed by Run's last step: written, audited and published,
// not only written.
func TestRunFlushesWhatIsLeftWhenItEnds(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bans.json")
	h := newHarness(t, Config{File: file})
	h.fail(tcp9000, attacker, 3)
	h.step(h.now) // the first ban: flushed at once
	other := netip.MustParseAddr("198.51.100.8")
	for range 3 { // at the same moment: within the interval, so it waits for the next flush
		h.Observe(tcp9000, other, 400, h.now)
	}
	if len(h.banned(tcp9000)) != 1 {
		t.Fatal("the second ban was flushed within the interval")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.Run(ctx)
	if got := h.banned(tcp9000); len(got) != 2 {
		t.Fatalf("after Run ended, banned %v; want both", got)
	}
	if len(h.rec.audits) != 2 {
		t.Fatalf("%d audit entries; want one per flush with a new ban, 2", len(h.rec.audits))
	}
	if again := New(Config{File: file, Now: func() time.Time { return h.now }}); len(again.List(nil)) != 2 {
		t.Fatalf("the file holds %d bans; want 2", len(again.List(nil)))
	}
}

// A policy that validation would refuse (a state restored from
// elsewhere) bans nobody, rather than bans that end at once and come back
// at every flush.
func TestInvalidPolicyBansNobody(t *testing.T) {
	h := newHarness(t, Config{}, spec(tcp9000, &stream.BanPolicy{After: 1, Within: "1m0s", For: "0s"}))
	h.fail(tcp9000, attacker, 3)
	h.step(h.now)
	if got := h.List(nil); len(got) != 0 {
		t.Fatalf("bans %v from a policy with for 0s", got)
	}
}

// A steady trickle of bans (a new source every second) does not reload a
// master every second: the flush interval doubles while bans keep coming,
// up to MaxFlushInterval, and a ban after a quiet spell is applied at
// once again.
func TestTrickleOfBansBacksOff(t *testing.T) {
	h := newHarness(t, Config{}, spec(tcp9000, &stream.BanPolicy{After: 1, Within: "1m0s", For: "1h0m0s"}))
	const seconds = 120
	for i := range seconds {
		h.Observe(tcp9000, netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), 400, h.now)
		h.step(h.now)
		h.now = h.now.Add(time.Second)
	}
	h.step(h.now.Add(MaxFlushInterval)) // the last ones' flush
	if got := len(h.banned(tcp9000)); got != seconds {
		t.Fatalf("%d of %d bans applied", got, seconds)
	}
	// 1, 2, 4, 8, 16, then every 30 s: 0 s, 1, 3, 7, 15, 31, 61, 91, and the last.
	if h.rec.triggers > 9 {
		t.Fatalf("%d flushes for a ban a second over %d s; want them spaced out", h.rec.triggers, seconds)
	}
	before := h.rec.triggers
	h.now = h.now.Add(2 * MaxFlushInterval) // quiet
	h.Observe(tcp9000, netip.MustParseAddr("203.0.113.9"), 400, h.now)
	h.step(h.now)
	if h.rec.triggers != before+1 {
		t.Fatal("a ban after a quiet spell waited for a flush")
	}
}
