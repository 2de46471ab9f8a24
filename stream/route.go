package stream

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Route sends the TLS connections of a shared port whose ClientHello names
// ServerName (SNI) to Backends, without terminating TLS: nginx reads the
// name with ssl_preread and picks the route's upstream.
type Route struct {
	// ServerName is a lower-case host name, or "*." and one: a leading
	// wildcard, which matches every sub-domain but not the bare name.
	ServerName string   `json:"server_name"`
	Backends   []string `json:"backends"`
	Balance    string   `json:"balance,omitempty"`
}

// MaxServerNameLength is the longest server name a route takes: a DNS
// name's limit.
const MaxServerNameLength = MaxHostLength

// Routed reports whether s routes by server name: its Backends are then
// the default, where connections that match no route go (none: closed).
func (s Spec) Routed() bool { return len(s.Routes) > 0 }

// AllBackends returns every backend s forwards to, each once: the
// stream's backends (a routed stream's default) and every route's, in
// that order.
func (s Spec) AllBackends() []string {
	if !s.Routed() {
		return s.Backends
	}
	out := slices.Clone(s.Backends)
	for _, r := range s.Routes {
		for _, b := range r.Backends {
			if !slices.Contains(out, b) {
				out = append(out, b)
			}
		}
	}
	return out
}

func cloneRoutes(rs []Route) []Route {
	if rs == nil {
		return nil
	}
	c := make([]Route, len(rs))
	for i, r := range rs {
		c[i] = Route{ServerName: r.ServerName, Backends: slices.Clone(r.Backends), Balance: r.Balance}
	}
	return c
}

func equalRoutes(a, b []Route) bool {
	return slices.EqualFunc(a, b, func(x, y Route) bool {
		return x.ServerName == y.ServerName && slices.Equal(x.Backends, y.Backends) && x.Balance == y.Balance
	})
}

// CanonicalServerName checks a route's server name and returns it in
// canonical form: lower case, without a trailing dot. It is a host name
// of letters, digits and hyphens (labels of 1-63 characters, not starting
// or ending with a hyphen, at most 253 characters in all), optionally
// starting with "*." (a leading wildcard). Nothing else passes: no other
// wildcard, no IP address, no non-ASCII (write IDNs in their xn-- form),
// so the name is always one safe nginx token.
func CanonicalServerName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if n == "" {
		return "", fmt.Errorf("empty server name")
	}
	if len(n) > MaxServerNameLength {
		return "", fmt.Errorf("longer than %d characters", MaxServerNameLength)
	}
	host, wild := strings.CutPrefix(n, "*.")
	if host == "" {
		return "", fmt.Errorf("%q: a wildcard needs a domain after \"*.\"", clip(name))
	}
	for _, c := range host {
		if c == '*' {
			return "", fmt.Errorf("%q: the only wildcard allowed is a leading \"*.\"", clip(name))
		}
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return "", fmt.Errorf("%q: character %q is not allowed (letters, digits, '-' and '.' only; write an international name in its xn-- form)", clip(name), c)
		}
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" || len(l) > maxLabelLength {
			return "", fmt.Errorf("%q: every label must be 1-%d characters", clip(name), maxLabelLength)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("%q: label %q may not start or end with '-'", clip(name), l)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", fmt.Errorf("%q: an IP address is not a server name (TLS clients send names only)", clip(name))
	}
	if wild {
		return "*." + host, nil
	}
	return host, nil
}

// Shown is a spec as the API shows it (and the events carry it): a
// routed stream's backends are its "default" (absent when there is none)
// and it has no "backends", so that what a GET answers can be PUT back.
type Shown struct {
	Spec
	Backends *[]string `json:"backends,omitempty"`
	Default  []string  `json:"default,omitempty"`
	// Range is a range's ports as text ("10000-10099"), for people.
	Range string `json:"range,omitempty"`
	// ExpiresIn is the whole seconds left until ExpiresAt, rounded up,
	// when the spec was shown (absent: the stream does not expire).
	ExpiresIn *int64 `json:"expires_in_seconds,omitempty"`
}

// Shown returns s as the API shows it now.
func (s Spec) Shown() Shown { return s.ShownAt(time.Now()) }

// ShownAt returns s as the API shows it at now (which expires_in_seconds
// counts from).
func (s Spec) ShownAt(now time.Time) Shown {
	var rng string
	if s.IsRange() {
		rng = s.Ports()
	}
	left := secondsLeft(s, now)
	if s.Routed() {
		return Shown{Spec: s, Default: s.Backends, Range: rng, ExpiresIn: left}
	}
	b := s.Backends
	if b == nil {
		b = []string{}
	}
	return Shown{Spec: s, Backends: &b, Range: rng, ExpiresIn: left}
}

// Forwarding is where a shown spec forwards: its backends, or a routed
// stream's default (also after a round trip through JSON, which fills
// Backends or Default rather than the embedded Spec's).
func (s Shown) Forwarding() []string {
	if s.Backends != nil {
		return *s.Backends
	}
	return s.Default
}
