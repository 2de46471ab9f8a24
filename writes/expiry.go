package writes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// Expiring streams. A write gives a stream a ttl (its lifetime from the
// write) or an expires_at (its deadline); the path stores the deadline,
// so that what is stored, exported and imported keeps it. When both are
// given (a GET answer or an export sent back), expires_at is the deadline
// and ttl only the length a renew without a body gives again.
//
// At its deadline the stream is deleted here, through DeleteMany with
// every other stream due at the same moment (one revision, one commit),
// on the condition that it is still at the revision whose deadline
// passed (a renew or a replace meanwhile wins), and an audit record desired.OpExpired is appended by the node whose delete
// went through. RunExpiry keeps one timer on the next deadline, set again
// at every change of the desired state; ExpireDue applies every deadline
// that passed, which start-up does before nginx serves anything.

// expiryRetry is how long RunExpiry first waits before it tries again a
// delete the desired state refused (unavailable, held); the wait doubles
// up to maxExpiryRetry while it keeps refusing.
const (
	expiryRetry    = 2 * time.Second
	maxExpiryRetry = time.Minute
)

// now is the path's clock.
func (p *Path) now() time.Time {
	if p.cfg.Now != nil {
		return p.cfg.Now()
	}
	return time.Now()
}

// resolveExpiry checks sp's ttl and expires_at and sets the deadline: an
// expires_at is kept (UTC, whole milliseconds) when it is in the future
// and within stream.MaxTTL; a ttl alone makes it now + ttl.
func (p *Path) resolveExpiry(sp stream.Spec) (stream.Spec, error) {
	now := p.now()
	var ttl time.Duration
	if sp.TTL != "" {
		d, canon, err := stream.ParseTTL(sp.TTL)
		if err != nil {
			return sp, &nginxconf.FieldError{Field: "ttl", Message: err.Error()}
		}
		ttl, sp.TTL = d, canon
	}
	switch {
	case sp.ExpiresAt != nil:
		at, err := checkDeadline(*sp.ExpiresAt, now)
		if err != nil {
			return sp, err
		}
		sp.ExpiresAt = &at
	case ttl > 0:
		at := now.Add(ttl).UTC().Truncate(time.Millisecond)
		sp.ExpiresAt = &at
	}
	return sp, nil
}

// checkDeadline returns at in canonical form (UTC, whole milliseconds)
// if it is after now and at most stream.MaxTTL ahead.
func checkDeadline(at, now time.Time) (time.Time, error) {
	at = at.UTC().Truncate(time.Millisecond)
	switch {
	case !at.After(now):
		return at, &nginxconf.FieldError{Field: "expires_at", Message: fmt.Sprintf("%s is not in the future (it is %s now)",
			at.Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339))}
	case at.Sub(now) > stream.MaxTTL:
		return at, &nginxconf.FieldError{Field: "expires_at", Message: fmt.Sprintf("%s is more than %v (365 days) ahead",
			at.Format(time.RFC3339Nano), stream.MaxTTL)}
	}
	return at, nil
}

// Renewal is what a renew asks: a new lifetime from now (TTL), or a new
// deadline (ExpiresAt), or neither: the stream's own ttl again.
type Renewal struct {
	TTL       string
	ExpiresAt *time.Time
}

// errNoTTL: a renew without a body of a stream that has no ttl.
var errNoTTL = &nginxconf.FieldError{Field: "ttl", Message: "the stream has no ttl to renew by: give ttl or expires_at"}

// renewed is cur with the deadline r asks for: a ttl (kept as the
// stream's ttl), a deadline, or the stream's own ttl again. A stream
// without a deadline gets one.
func renewed(cur stream.Spec, r Renewal) (stream.Spec, error) {
	sp := cur.Clone()
	switch {
	case r.TTL != "" && r.ExpiresAt != nil:
		return sp, &nginxconf.FieldError{Field: "ttl", Message: "give ttl or expires_at, not both"}
	case r.TTL != "":
		sp.TTL, sp.ExpiresAt = r.TTL, nil
	case r.ExpiresAt != nil:
		at := *r.ExpiresAt
		sp.ExpiresAt = &at
	case cur.TTL == "":
		return sp, errNoTTL
	default:
		sp.ExpiresAt = nil // the ttl again, from now
	}
	return sp, nil
}

// Renew gives the stream id a new deadline (see Renewal) if m holds, and
// stores it like a Put. Without a revision in m, it is conditional on
// the revision it read, tried again if the stream changed meanwhile.
func (p *Path) Renew(ctx context.Context, id stream.ID, r Renewal, m desired.Match, by string) (Result, error) {
	for attempt := 0; ; attempt++ {
		cur, err := p.st.Get(id)
		if err != nil {
			return Result{}, err
		}
		if err := m.Check(&cur); err != nil {
			return Result{}, err
		}
		sp, err := renewed(cur, r)
		if err != nil {
			return Result{}, err
		}
		cond := m
		if cond.Revision == 0 {
			cond = desired.Match{Revision: cur.Revision}
		}
		res, err := p.Put(ctx, sp, cond, by)
		if errors.Is(err, desired.ErrRevisionMismatch) && m.Revision == 0 && attempt < 3 {
			continue
		}
		return res, err
	}
}

// PlanRenew is Renew changing nothing: the stream as a renew would
// store it now.
func (p *Path) PlanRenew(ctx context.Context, id stream.ID, r Renewal, m desired.Match) (stream.Spec, error) {
	cur, err := p.st.Get(id)
	if err != nil {
		return cur, err
	}
	if err := m.Check(&cur); err != nil {
		return cur, err
	}
	sp, err := renewed(cur, r)
	if err != nil {
		return sp, err
	}
	return p.Check(ctx, sp)
}

// Expire deletes sp, as the desired state listed it, if its deadline
// passed and it is still at its revision, and records it in the audit
// log. It returns false, and no error, when the stream is gone or
// changed since (someone else deleted, renewed or replaced it).
func (p *Path) Expire(sp stream.Spec) (bool, error) {
	now := p.now()
	if !sp.Expired(now) {
		return false, nil
	}
	id := sp.ID()
	prev, pending, err := p.Delete(id, desired.Match{Revision: sp.Revision})
	switch {
	case errors.Is(err, desired.ErrNotFound), errors.Is(err, desired.ErrRevisionMismatch):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("expire %s: %w", id, err)
	}
	p.expired(prev, pending.Revision(), now)
	return true, nil
}

// expired logs and records in the audit log that this node deleted sp,
// whose deadline had passed at now, at revision rev.
func (p *Path) expired(sp stream.Spec, rev uint64, now time.Time) {
	p.log.Info().Stringer("stream", sp.ID()).Time("expires_at", *sp.ExpiresAt).Uint64("revision", rev).
		Dur("late", now.Sub(*sp.ExpiresAt)).Msg("expired")
	if err := p.st.AppendAudit(desired.ExpiredRecord(sp, now, "deleted by this node")); err != nil {
		p.log.Error().Err(err).Stringer("stream", sp.ID()).Msg("audit log: an expiry")
	}
}

// ExpireDue expires every stream whose deadline passed, and returns the
// earliest deadline still ahead (zero: none) and the error of the delete
// if the desired state refused it (those streams are tried again).
func (p *Path) ExpireDue() (time.Time, error) {
	next, _, err := p.expireDue()
	return next, err
}

// expireDue is ExpireDue that also counts the streams listed whose
// deadline passed and that it did not delete (gone or changed meanwhile,
// or refused). Every stream due is deleted by one DeleteMany (one
// revision, one commit), each on the condition that it is still at the
// revision listed: a renew or replace that came first wins.
func (p *Path) expireDue() (time.Time, int, error) {
	specs, _ := p.st.List()
	now := p.now()
	var next time.Time
	var due []desired.Conditional
	for _, sp := range specs {
		if !sp.Expires() {
			continue
		}
		if !sp.Expired(now) {
			if next.IsZero() || sp.ExpiresAt.Before(next) {
				next = *sp.ExpiresAt
			}
			continue
		}
		due = append(due, desired.Conditional{ID: sp.ID(), Revision: sp.Revision})
	}
	if len(due) == 0 {
		return next, 0, nil
	}
	deleted, rev, err := p.DeleteMany(due)
	for _, sp := range deleted {
		p.expired(sp, rev, now)
	}
	if err != nil {
		err = fmt.Errorf("expire %d streams: %w", len(due)-len(deleted), err)
	}
	return next, len(due) - len(deleted), err
}

// ExpireAtStart expires the streams whose deadline passed while the
// daemon was down, before nginx serves anything: it returns once the
// desired state lists none of them, or after within (the error then says
// how many are left, and why). A stream another writer already removed
// may still be listed for a moment (in a fleet, a node's copy of etcd's
// state catches up with a deletion by etcd's lease): it waits for the
// state's next change. It returns at once when the state takes no
// writes (desired.ErrUnavailable): RunExpiry tries again.
func (p *Path) ExpireAtStart(within time.Duration) error {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		changed := p.st.Updated()
		_, left, err := p.expireDue()
		if left == 0 {
			return err
		}
		if errors.Is(err, desired.ErrUnavailable) {
			// No write goes through now (etcd unreachable, a held copy):
			// waiting would only delay the start; RunExpiry tries again.
			return fmt.Errorf("%d streams whose time ran out are not deleted: %w", left, err)
		}
		select {
		case <-changed:
		case <-time.After(startRetry):
		case <-deadline.C:
			if err == nil {
				err = errors.New("the desired state still lists them")
			}
			return fmt.Errorf("%d streams whose time ran out are not deleted after %v: %w", left, within, err)
		}
	}
}

// startRetry is how often ExpireAtStart tries again a delete that failed.
const startRetry = 200 * time.Millisecond

// RunExpiry expires streams at their deadlines until ctx ends: one timer
// on the next deadline, set again whenever the desired state changes
// (whoever changed it), and after a delete the state refused, in
// expiryRetry.
func (p *Path) RunExpiry(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	retry := expiryRetry
	for {
		changed := p.st.Updated()
		next, err := p.ExpireDue()
		wait := time.Duration(-1)
		if !next.IsZero() {
			wait = max(0, next.Sub(p.now()))
		}
		if err == nil {
			retry = expiryRetry
		} else {
			p.log.Warn().Err(err).Dur("retry_in", retry).Msg("a stream's time ran out but it could not be deleted; trying again")
			if wait < 0 || wait > retry {
				wait = retry
			}
			retry = min(2*retry, maxExpiryRetry)
		}
		timer.Stop()
		var fire <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-fire:
		}
	}
}
