// Package policy decides where streams may point. An API that opens ports
// to arbitrary backends is an open relay into the private network; these
// rules keep it from being one. The same rules judge a backend when it is
// written (the API answers 403) and every address it resolves to later,
// before that address is rendered into nginx's configuration (DNS
// rebinding).
package policy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// Backends holds the rules for backends.
type Backends struct {
	// AllowCIDRs and AllowSuffixes are BACKEND_ALLOW. When either is set,
	// a host name must end in one of the suffixes (if any are given) and,
	// when CIDRs are given, every address of the backend must be inside
	// one of them.
	AllowCIDRs    []netip.Prefix
	AllowSuffixes []string
	// APIPort is the API's own port: no stream may point at it on this
	// host.
	APIPort int
	// PortMin and PortMax are PORT_RANGE: no stream may point at a stream
	// port of this host (a loop).
	PortMin, PortMax int
	// StreamBind is STREAM_BIND_ADDRESS, the listen address of streams
	// that name none (empty: every IPv4 address); CheckLoop judges a
	// stream's backends against it.
	StreamBind string
	// Lookup resolves host names (default: Go's resolver, 2s at most).
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// LocalAddrs lists this host's addresses (default: its interfaces,
	// read at most every few seconds).
	LocalAddrs func() []netip.Addr

	localMu sync.Mutex
	localAt time.Time
	local   []netip.Addr
}

// localRefresh is how long the interfaces' addresses are reused: the
// reconciler checks every rendered address, and a start renders them all.
const localRefresh = 5 * time.Second

// Violation is a backend that a rule refuses.
type Violation struct {
	// Rule names the rule: BACKEND_ALLOW, link-local, self-proxy or loop.
	Rule string
	// Message says why, naming the backend and the address.
	Message string
}

func (v *Violation) Error() string { return v.Message + " (rule: " + v.Rule + ")" }

func violation(rule, format string, args ...any) *Violation {
	return &Violation{Rule: rule, Message: fmt.Sprintf(format, args...)}
}

// Link-local ranges, where cloud metadata services live (169.254.169.254).
var linkLocal = []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10")}

// ParseAllow reads BACKEND_ALLOW: comma-separated CIDRs (or addresses)
// and DNS suffixes such as ".internal".
func ParseAllow(v string) (cidrs []netip.Prefix, suffixes []string, err error) {
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
		case strings.HasPrefix(f, "."):
			if strings.ContainsAny(f, "/: ") || len(f) < 2 {
				return nil, nil, fmt.Errorf("BACKEND_ALLOW: %q is not a DNS suffix", f)
			}
			suffixes = append(suffixes, strings.ToLower(f))
		default:
			p, err := netip.ParsePrefix(f)
			if err != nil {
				a, aerr := netip.ParseAddr(f)
				if aerr != nil {
					return nil, nil, fmt.Errorf("BACKEND_ALLOW: %q is neither a CIDR nor a DNS suffix starting with '.'", f)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			cidrs = append(cidrs, p.Masked())
		}
	}
	return cidrs, suffixes, nil
}

// Check resolves each backend (canonical host:port) and returns a
// *Violation naming the rule that refuses one of them, or nil. A name
// that does not resolve passes unless BACKEND_ALLOW has CIDRs to check it
// against: the reconciler then fails its stream with the lookup's error.
func (p *Backends) Check(ctx context.Context, backends []string) error {
	for _, s := range backends {
		b, err := stream.ParseBackend(s)
		if err != nil {
			return fmt.Errorf("backend %q: %w", s, err)
		}
		if err := p.check(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func (p *Backends) check(ctx context.Context, b stream.Backend) error {
	if b.IsIP() {
		return p.CheckResolved(b, nil)
	}
	host := b.Host
	if err := p.checkName(b.String(), host); err != nil {
		return err
	}
	addrs, err := p.lookup(ctx, strings.TrimSuffix(host, "."))
	if err != nil {
		if len(p.AllowCIDRs) > 0 {
			return violation("BACKEND_ALLOW", "%s does not resolve, so it cannot be checked against %s", host, joinPrefixes(p.AllowCIDRs))
		}
		return nil
	}
	return p.CheckResolved(b, addrs)
}

// CheckResolved judges one backend and the addresses
// its host name resolved to (ignored for an IP literal, which is its own
// address). It does no lookup; the reconciler calls it before rendering
// every address into nginx's configuration.
func (p *Backends) CheckResolved(b stream.Backend, addrs []netip.Addr) error {
	backend := b.String()
	if b.IsIP() {
		if len(p.AllowSuffixes) > 0 && len(p.AllowCIDRs) == 0 {
			return violation("BACKEND_ALLOW", "%s: BACKEND_ALLOW names only DNS suffixes, so backends must be host names", backend)
		}
		addrs = []netip.Addr{b.Addr}
	} else if err := p.checkName(backend, b.Host); err != nil {
		return err
	}
	for _, a := range addrs {
		if err := p.checkAddr(backend, a.Unmap(), b.Port); err != nil {
			return err
		}
	}
	return nil
}

func (p *Backends) checkName(backend, host string) error {
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if len(p.AllowSuffixes) > 0 && !hasSuffix(name, p.AllowSuffixes) {
		return violation("BACKEND_ALLOW", "%s is not under %s", host, strings.Join(p.AllowSuffixes, ", "))
	}
	return nil
}

func (p *Backends) checkAddr(backend string, a netip.Addr, port int) error {
	if len(p.AllowCIDRs) > 0 && !contains(p.AllowCIDRs, a) {
		return violation("BACKEND_ALLOW", "%s (%s) is outside %s", backend, a, joinPrefixes(p.AllowCIDRs))
	}
	if contains(linkLocal, a) && !explicitlyAllows(p.AllowCIDRs, a) {
		return violation("link-local", "%s (%s) is a link-local address, where cloud metadata services answer; allow it explicitly in BACKEND_ALLOW if you mean it", backend, a)
	}
	if !p.isLocal(a) {
		return nil
	}
	if port == p.APIPort {
		return violation("self-proxy", "%s (%s) is stream-conductor's own API", backend, a)
	}
	if p.PortMax > 0 && port >= p.PortMin && port <= p.PortMax && !namesHost(p.AllowCIDRs, a) {
		return violation("loop", "%s (%s) is a stream port of this node (PORT_RANGE %d-%d): a stream may not point at another stream", backend, a, p.PortMin, p.PortMax)
	}
	return nil
}

// CheckLoop returns a *Violation (rule "loop") when one of backends
// (canonical host:port, of stream sp) is sp itself: one of sp's own
// ports on an address sp's listen address accepts on (with port_mode
// same, each port forwards to itself there). nginx would connect to
// itself, each connection opening another, until it runs out of files;
// no BACKEND_ALLOW entry lifts it. A name is judged by what it resolves
// to; one that does not resolve passes (Check, and the reconciler, fail
// it).
func (p *Backends) CheckLoop(ctx context.Context, sp stream.Spec, backends []string) error {
	listen := sp.ListenAddr(p.StreamBind).Addr()
	for _, s := range backends {
		b, err := stream.ParseBackend(s)
		if err != nil || !sp.Covers(b.Port) {
			continue // Check refuses what does not parse
		}
		addrs := []netip.Addr{b.Addr}
		if !b.IsIP() {
			if addrs, err = p.lookup(ctx, strings.TrimSuffix(b.Host, ".")); err != nil {
				continue
			}
		}
		for _, a := range addrs {
			if p.accepts(listen, a.Unmap()) {
				return loopViolation(sp, b, a, listen)
			}
		}
	}
	return nil
}

// loopViolation says that sp, listening on listen, forwards to itself
// through backend b at address a.
func loopViolation(sp stream.Spec, b stream.Backend, a, listen netip.Addr) *Violation {
	what := fmt.Sprintf("%s (%s) is this stream's own port %d", b, a, b.Port)
	if sp.SamePort() {
		what = fmt.Sprintf("with port_mode same each port forwards to the same port on %s (%s), where this stream listens on ports %s", b.Host, a, sp.Ports())
	}
	where := listen.String()
	switch {
	case listen.IsUnspecified() && listen.Is4():
		where += ", every local IPv4 address"
	case listen.IsUnspecified():
		where += ", every local IPv6 address"
	}
	return violation("loop", "%s: it listens on %s, so nginx would connect to itself; listen on another address (bind, or STREAM_BIND_ADDRESS) or forward elsewhere", what, where)
}

// accepts reports whether a socket listening on address listen takes
// the connections nginx makes to address a: a wildcard (0.0.0.0, ::)
// takes every local address of its family (nginx listens on :: with
// ipv6only on), any other address only itself. A connection to 0.0.0.0
// or :: goes to the loopback address.
func (p *Backends) accepts(listen, a netip.Addr) bool {
	switch {
	case a.IsUnspecified() && a.Is4():
		a = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case a.IsUnspecified():
		a = netip.IPv6Loopback()
	}
	if listen.IsUnspecified() {
		return a.Is4() == listen.Is4() && p.isLocal(a)
	}
	return a == listen
}

func (p *Backends) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if p.Lookup != nil {
		return p.Lookup(ctx, host)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, err
}

// isLocal reports whether a reaches this host: loopback, unspecified, or
// one of its interface addresses.
func (p *Backends) isLocal(a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	for _, l := range p.localAddrs() {
		if l == a {
			return true
		}
	}
	return false
}

func (p *Backends) localAddrs() []netip.Addr {
	if p.LocalAddrs != nil {
		return p.LocalAddrs()
	}
	p.localMu.Lock()
	defer p.localMu.Unlock()
	if p.local == nil || time.Since(p.localAt) > localRefresh {
		p.local, p.localAt = interfaceAddrs(), time.Now()
	}
	return p.local
}

func interfaceAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

func hasSuffix(name string, suffixes []string) bool {
	for _, s := range suffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// explicitlyAllows reports whether an allowed CIDR lies within a
// link-local range and contains a: 0.0.0.0/0 does not count.
func explicitlyAllows(allowed []netip.Prefix, a netip.Addr) bool {
	for _, p := range allowed {
		if p.Contains(a) && (contains(linkLocal, p.Addr()) && p.Bits() >= 10) {
			return true
		}
	}
	return false
}

// namesHost reports whether allowed names a exactly (a /32 or /128): an
// operator who allows one local address that way means a backend there,
// such as a range's port_mode same to a service listening on the same
// ports at another address of this host (the streams on 127.0.0.1, the
// service on 127.0.0.2). The loop rule then leaves it alone.
func namesHost(allowed []netip.Prefix, a netip.Addr) bool {
	for _, p := range allowed {
		if p.IsSingleIP() && p.Addr() == a {
			return true
		}
	}
	return false
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
