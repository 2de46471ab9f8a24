package writes

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// clock is a settable clock for the write path.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// clocked is a fixture whose write path reads c.
func clocked(t *testing.T) (*fixture, *clock) {
	f := newFixture(t)
	c := &clock{t: time.Date(2026, 11, 30, 9, 0, 0, 123456789, time.UTC)}
	f.p.cfg.Now = c.now
	return f, c
}

func at(t time.Time) *time.Time { return &t }

func fieldOf(err error) string {
	var fe *nginxconf.FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

// A ttl becomes a deadline from the write's time; an expires_at is kept
// (UTC, whole milliseconds); given both, expires_at is the deadline and
// ttl the renew length. Hostile values are refused, naming the field.
func TestExpiryDeadlineOfAWrite(t *testing.T) {
	f, c := clocked(t)
	now := c.now()
	paris := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		name      string
		ttl       string
		expiresAt *time.Time
		wantAt    *time.Time
		wantTTL   string
		field     string
	}{
		{name: "ttl", ttl: "2h", wantAt: at(now.Add(2 * time.Hour).Truncate(time.Millisecond)), wantTTL: "2h0m0s"},
		{name: "expires_at in another zone", expiresAt: at(now.Add(time.Hour).In(paris)), wantAt: at(now.Add(time.Hour).UTC().Truncate(time.Millisecond))},
		{name: "both", ttl: "1h", expiresAt: at(now.Add(3 * time.Hour)), wantAt: at(now.Add(3 * time.Hour).Truncate(time.Millisecond)), wantTTL: "1h0m0s"},
		{name: "neither"},
		{name: "a year", ttl: "8760h", wantAt: at(now.Add(stream.MaxTTL).Truncate(time.Millisecond)), wantTTL: "8760h0m0s"},
		{name: "zero ttl", ttl: "0s", field: "ttl"},
		{name: "negative ttl", ttl: "-1h", field: "ttl"},
		{name: "garbage ttl", ttl: "two hours", field: "ttl"},
		{name: "no unit", ttl: "7200", field: "ttl"},
		{name: "huge ttl", ttl: "8761h", field: "ttl"},
		{name: "overflowing ttl", ttl: "9999999999h", field: "ttl"},
		{name: "sub-millisecond ttl", ttl: "1s500us", field: "ttl"},
		{name: "past expires_at", expiresAt: at(now.Add(-time.Second)), field: "expires_at"},
		{name: "expires_at now", expiresAt: at(now), field: "expires_at"},
		{name: "expires_at past a year", expiresAt: at(now.Add(stream.MaxTTL + time.Second)), field: "expires_at"},
		{name: "year 9999", expiresAt: at(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)), field: "expires_at"},
		{name: "both, expires_at past", ttl: "1h", expiresAt: at(now.Add(-time.Hour)), field: "expires_at"},
		{name: "both, bad ttl", ttl: "-5m", expiresAt: at(now.Add(time.Hour)), field: "ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := tcp(9001, "good:1")
			sp.TTL, sp.ExpiresAt = tc.ttl, tc.expiresAt
			got, err := f.p.Check(context.Background(), sp)
			if tc.field != "" {
				if fieldOf(err) != tc.field {
					t.Fatalf("Check: %v, want a refusal of field %s", err, tc.field)
				}
				if _, err := f.p.Put(context.Background(), sp, desired.Match{}, "r"); fieldOf(err) != tc.field {
					t.Fatalf("Put: %v, want a refusal of field %s", err, tc.field)
				}
				if _, err := f.st.Get(sp.ID()); !errors.Is(err, desired.ErrNotFound) {
					t.Fatal("a refused write stored the stream")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.TTL != tc.wantTTL || (got.ExpiresAt == nil) != (tc.wantAt == nil) ||
				(got.ExpiresAt != nil && (!got.ExpiresAt.Equal(*tc.wantAt) || got.ExpiresAt.Location() != time.UTC)) {
				t.Fatalf("ttl %q expires_at %v, want %q %v", got.TTL, got.ExpiresAt, tc.wantTTL, tc.wantAt)
			}
		})
	}
}

// A stream is expired only at the revision whose deadline passed: a renew
// in between wins. The expiry goes through the delete of the write path
// and is in the audit log, by the daemon itself.
func TestExpireOnlyTheRevisionWhoseTimeRanOut(t *testing.T) {
	f, c := clocked(t)
	ctx := context.Background()
	sp := tcp(9001, "good:1")
	sp.TTL = "10s"
	first, err := f.p.Put(ctx, sp, desired.Match{}, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if done, err := f.p.Expire(first.Stored); done || err != nil {
		t.Fatalf("expired before its deadline: %v %v", done, err)
	}
	c.add(5 * time.Second)
	renewed, err := f.p.Renew(ctx, sp.ID(), Renewal{}, desired.Match{}, "r2")
	if err != nil || !renewed.Stored.ExpiresAt.Equal(c.now().Add(10*time.Second).Truncate(time.Millisecond)) {
		t.Fatalf("renew by the stream's ttl: %+v %v", renewed.Stored.ExpiresAt, err)
	}
	c.add(6 * time.Second) // past the first deadline, not the renewed one
	if done, err := f.p.Expire(first.Stored); done || err != nil {
		t.Fatalf("the first revision's expiry went through a renew: %v %v", done, err)
	}
	if _, err := f.p.ExpireDue(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Get(sp.ID()); err != nil {
		t.Fatalf("the renewed stream was expired: %v", err)
	}
	c.add(5 * time.Second)
	next, err := f.p.ExpireDue()
	if err != nil || !next.IsZero() {
		t.Fatalf("ExpireDue: next %v, %v", next, err)
	}
	if _, err := f.st.Get(sp.ID()); !errors.Is(err, desired.ErrNotFound) {
		t.Fatalf("not expired past its deadline: %v", err)
	}
	recs, err := f.st.Audit(0, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("audit: %+v %v", recs, err)
	}
	r := recs[0]
	if r.Operation != desired.OpExpired || r.Stream != "tcp/9001" || r.Before == nil || r.After != nil || r.Actor != "" ||
		!strings.HasPrefix(r.Result, desired.ExpiredResult) || r.Before.Revision != renewed.Stored.Revision {
		t.Fatalf("audit record %+v", r)
	}
}

// A renew gives a new lifetime (kept as the ttl), a new deadline, or the
// stream's own ttl again; it may give a first deadline; it honours the
// precondition.
func TestRenew(t *testing.T) {
	f, c := clocked(t)
	ctx := context.Background()
	id := stream.MustParseID("tcp/9001")
	if _, err := f.p.Renew(ctx, id, Renewal{TTL: "1h"}, desired.Match{}, "r"); !errors.Is(err, desired.ErrNotFound) {
		t.Fatalf("renew of a missing stream: %v", err)
	}
	put, err := f.p.Put(ctx, tcp(9001, "good:1"), desired.Match{}, "r")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.p.Renew(ctx, id, Renewal{}, desired.Match{}, "r"); fieldOf(err) != "ttl" {
		t.Fatalf("renew without a body of a stream without a ttl: %v", err)
	}
	res, err := f.p.Renew(ctx, id, Renewal{TTL: "30m"}, desired.Match{}, "r")
	if err != nil || res.Stored.TTL != "30m0s" || !res.Stored.ExpiresAt.Equal(c.now().Add(30*time.Minute).Truncate(time.Millisecond)) {
		t.Fatalf("renew that gives a first deadline: %+v %v", res.Stored, err)
	}
	if _, err := f.p.Renew(ctx, id, Renewal{TTL: "1h"}, desired.Match{Revision: put.Stored.Revision}, "r"); !errors.Is(err, desired.ErrRevisionMismatch) {
		t.Fatalf("renew with a stale revision: %v", err)
	}
	when := c.now().Add(5 * time.Minute)
	res, err = f.p.Renew(ctx, id, Renewal{ExpiresAt: &when}, desired.Match{Revision: res.Stored.Revision}, "r")
	if err != nil || !res.Stored.ExpiresAt.Equal(when.Truncate(time.Millisecond)) || res.Stored.TTL != "30m0s" {
		t.Fatalf("renew to an earlier deadline: %+v %v", res.Stored, err)
	}
	if _, err := f.p.Renew(ctx, id, Renewal{TTL: "1h", ExpiresAt: &when}, desired.Match{}, "r"); fieldOf(err) != "ttl" {
		t.Fatalf("renew with both: %v", err)
	}
	past := c.now().Add(-time.Minute)
	if _, err := f.p.Renew(ctx, id, Renewal{ExpiresAt: &past}, desired.Match{}, "r"); fieldOf(err) != "expires_at" {
		t.Fatalf("renew into the past: %v", err)
	}
}

// RunExpiry deletes a stream at its deadline (not before), with a timer
// set again when the state changes: a renew moves it.
func TestRunExpiryFollowsTheDeadlines(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.p.RunExpiry(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	sp := tcp(9001, "good:1")
	sp.ExpiresAt = at(time.Now().Add(300 * time.Millisecond))
	if _, err := f.p.Put(context.Background(), sp, desired.Match{}, "r"); err != nil {
		t.Fatal(err)
	}
	renewedTo := time.Now().Add(700 * time.Millisecond)
	if _, err := f.p.Renew(context.Background(), sp.ID(), Renewal{ExpiresAt: &renewedTo}, desired.Match{}, "r"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stream expired", func() bool {
		_, err := f.st.Get(sp.ID())
		return errors.Is(err, desired.ErrNotFound)
	})
	if gone := time.Now(); gone.Before(renewedTo.Truncate(time.Millisecond)) {
		t.Fatalf("expired at %s, before its renewed deadline %s", gone, renewedTo)
	} else if late := gone.Sub(renewedTo); late > 500*time.Millisecond {
		t.Fatalf("expired %v after its deadline", late)
	}
}

// At start, a stream whose deadline passed while the daemon was down is
// deleted before anything else happens; one with time left stays.
func TestExpireAtStart(t *testing.T) {
	f := newFixture(t)
	lapsed, kept := tcp(9001, "good:1"), tcp(9002, "good:1")
	lapsed.ExpiresAt = at(time.Now().Add(-time.Minute))
	kept.ExpiresAt = at(time.Now().Add(time.Hour))
	for _, sp := range []stream.Spec{lapsed, kept} {
		if _, _, err := f.st.Put(sp, desired.Match{}); err != nil { // stored while it had time left
			t.Fatal(err)
		}
	}
	if err := f.p.ExpireAtStart(time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Get(lapsed.ID()); !errors.Is(err, desired.ErrNotFound) {
		t.Fatalf("the lapsed stream is still stored: %v", err)
	}
	if _, err := f.st.Get(kept.ID()); err != nil {
		t.Fatalf("the stream with time left: %v", err)
	}
}

// renewFirst is a desired state on which another writer renews a stream
// (gives it a new deadline) just before the first delete reaches it: the
// renew that lands first.
type renewFirst struct {
	desired.State
	once  sync.Once
	renew func()
}

func (r *renewFirst) Delete(id stream.ID, m desired.Match) (stream.Spec, uint64, error) {
	r.once.Do(r.renew)
	return r.State.Delete(id, m)
}

func (r *renewFirst) DeleteMany(items []desired.Conditional) ([]stream.Spec, uint64, error) {
	r.once.Do(r.renew)
	return r.State.DeleteMany(items)
}

// Every stream due at one moment is deleted in one revision of the
// desired state (one commit), with one audit record each; one renewed
// after the list and before the delete survives, and one not due stays.
func TestExpireDueDeletesAllDueInOneRevision(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)}
	var f *fixture
	var renewedRev uint64
	f = newFixtureWith(t, func(st desired.State) desired.State {
		return &renewFirst{State: st, renew: func() {
			sp, err := f.st.Get(stream.MustParseID("tcp/9002"))
			if err != nil {
				t.Error(err)
				return
			}
			sp.ExpiresAt = at(c.now().Add(time.Hour))
			stored, _, err := f.st.Put(sp, desired.Match{Revision: sp.Revision})
			if err != nil {
				t.Error(err)
			}
			renewedRev = stored.Revision
		}}
	})
	f.p.cfg.Now = c.now
	ctx := context.Background()
	for _, port := range []int{9001, 9002, 9003, 9004, 9006} {
		sp := tcp(port, "good:1")
		sp.TTL = "10s"
		if port == 9006 {
			sp.TTL = "1h"
		}
		if _, err := f.p.Put(ctx, sp, desired.Match{}, "r"); err != nil {
			t.Fatal(err)
		}
	}
	_, before := f.st.List()
	c.add(11 * time.Second)
	next, err := f.p.ExpireDue()
	if err != nil || !next.Equal(c.now().Add(-11*time.Second+time.Hour)) {
		t.Fatalf("ExpireDue: next %v, %v", next, err)
	}
	changes, err := f.st.Since(before)
	if err != nil {
		t.Fatal(err)
	}
	revs := map[uint64][]string{}
	for _, ch := range changes {
		if ch.Spec == nil {
			revs[ch.Revision] = append(revs[ch.Revision], ch.ID.String())
		}
	}
	if len(revs) != 1 || len(changes) != 4 { // the renew, and 3 deletions in one revision
		t.Fatalf("deletions by revision %v (of %d changes), want tcp/9001, 9003, 9004 in one", revs, len(changes))
	}
	if got, err := f.st.Get(stream.MustParseID("tcp/9002")); err != nil || got.Revision != renewedRev {
		t.Fatalf("the stream renewed before the delete: %+v, %v", got, err)
	}
	if _, err := f.st.Get(stream.MustParseID("tcp/9006")); err != nil {
		t.Fatalf("the stream not due: %v", err)
	}
	recs, err := f.st.Audit(0, 10)
	if err != nil || len(recs) != 3 {
		t.Fatalf("audit: %+v %v; want 3 expiries", recs, err)
	}
	for _, r := range recs {
		if r.Operation != desired.OpExpired || r.Before == nil || r.Stream == "tcp/9002" {
			t.Fatalf("audit record %+v", r)
		}
	}
}
