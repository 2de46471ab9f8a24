package nginxconf

import (
	"bytes"
	"fmt"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// Bounds of a ban policy: a failure count, a window of up to a day, a ban
// of up to a year.
const (
	MaxBanAfter  = 1000
	maxBanWithin = 24 * time.Hour
	maxBanFor    = 8760 * time.Hour
)

// validateBan checks s's ban policy, if any, in place. Bans are decided
// from nginx's session log, which only managed mode has (r.NoSessionLog
// in external mode): there a policy could never trigger, so it is refused
// rather than accepted and silently inert.
func validateBan(s *stream.Spec, r Rules) error {
	b := s.Ban
	if b == nil {
		return nil
	}
	if r.NoSessionLog {
		return fieldErr("ban", "needs the session log of managed mode (NGINX_MODE=managed); with NGINX_MODE=external no session is seen, so no ban could ever be made")
	}
	if b.After < 1 || b.After > MaxBanAfter {
		return fieldErr("ban.after", "must be 1-%d failed sessions", MaxBanAfter)
	}
	var err error
	if b.Within, err = requiredDuration("ban.within", b.Within, maxBanWithin); err != nil {
		return err
	}
	b.For, err = requiredDuration("ban.for", b.For, maxBanFor)
	return err
}

// requiredDuration is canonicalDuration for a field that must be set.
func requiredDuration(field, v string, max time.Duration) (string, error) {
	if v == "" {
		return "", fieldErr(field, "is required: a duration like 1m or 1h")
	}
	return canonicalDuration(field, v, max)
}

// writeBanned writes a deny line per banned address, at the top of the
// server block: nginx's access rules are checked in order and the first
// match wins, so a ban comes before the stream's own allow list.
//
// nginx open source has no access list that changes at run time (the
// key-value store is NGINX Plus's; njs is not in Debian's nginx), so a
// ban is a deny line applied by reloading the stream's master: package
// bans batches them, so that many bans make few reloads. The host's
// firewall (nftables) would need no reload, but it is the operator's,
// and a rule there is invisible to nginx's configuration and to drift
// repair.
func writeBanned(b *bytes.Buffer, banned []string) {
	for _, a := range banned {
		fmt.Fprintf(b, "    deny %s;\n", a)
	}
}
