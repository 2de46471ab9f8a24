package stream

import (
	"fmt"
	"math"
	"time"
)

// MaxTTL bounds a stream's lifetime: ttl, and how far ahead expires_at
// may be.
const MaxTTL = 365 * 24 * time.Hour

// MinTTL is the shortest ttl.
const MinTTL = time.Second

// ParseTTL reads a ttl ("2h", Go's duration syntax) of MinTTL to MaxTTL,
// in whole milliseconds, and returns it with its canonical text.
func ParseTTL(v string) (time.Duration, string, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, "", fmt.Errorf("%q is not a duration like 30m or 2h", clip(v))
	}
	if d < MinTTL || d > MaxTTL {
		return 0, "", fmt.Errorf("must be between %v and %v (365 days), not %s", MinTTL, MaxTTL, clip(v))
	}
	if d%time.Millisecond != 0 {
		return 0, "", fmt.Errorf("must be a whole number of milliseconds")
	}
	return d, d.String(), nil
}

// Expires reports whether s has a deadline.
func (s Spec) Expires() bool { return s.ExpiresAt != nil }

// Expired reports whether s has a deadline and it is not after now.
func (s Spec) Expired(now time.Time) bool {
	return s.ExpiresAt != nil && !s.ExpiresAt.After(now)
}

// ExpiresIn is the time left to s at now (0 once expired); false when s
// does not expire.
func (s Spec) ExpiresIn(now time.Time) (time.Duration, bool) {
	if s.ExpiresAt == nil {
		return 0, false
	}
	return max(0, s.ExpiresAt.Sub(now)), true
}

// sameExpiry reports whether s and o have the same deadline and ttl.
func (s Spec) sameExpiry(o Spec) bool {
	if (s.ExpiresAt == nil) != (o.ExpiresAt == nil) || s.TTL != o.TTL {
		return false
	}
	return s.ExpiresAt == nil || s.ExpiresAt.Equal(*o.ExpiresAt)
}

// secondsLeft is what expires_in_seconds shows: the whole seconds left,
// rounded up (a stream shown with 0 is gone or going), nil without a
// deadline.
func secondsLeft(s Spec, now time.Time) *int64 {
	left, ok := s.ExpiresIn(now)
	if !ok {
		return nil
	}
	n := int64(math.Ceil(left.Seconds()))
	return &n
}
