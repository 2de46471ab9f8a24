package httpapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// BackendPolicy decides where streams may point. An API that opens ports
// to arbitrary backends is an open relay into the private network; these
// rules keep it from being one.
type BackendPolicy struct {
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
	// Lookup resolves host names (default net.DefaultResolver).
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// LocalAddrs lists this host's addresses (default: its interfaces).
	LocalAddrs func() []netip.Addr
}

// Link-local ranges, where cloud metadata services live (169.254.169.254).
var linkLocal = []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10")}

// ParseBackendAllow reads BACKEND_ALLOW: comma-separated CIDRs (or
// addresses) and DNS suffixes such as ".internal".
func ParseBackendAllow(v string) (cidrs []netip.Prefix, suffixes []string, err error) {
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

func forbidden(rule, format string, args ...any) *Error {
	return &Error{Status: http.StatusForbidden, Code: CodeForbidden, Field: "backends",
		Message: fmt.Sprintf(format, args...) + " (rule: " + rule + ")"}
}

// Check returns a 403 *Error naming the rule that refuses one of the
// backends (canonical host:port), or nil.
func (p *BackendPolicy) Check(ctx context.Context, backends []string) error {
	for _, b := range backends {
		if err := p.check(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func (p *BackendPolicy) check(ctx context.Context, backend string) error {
	host, portStr, err := net.SplitHostPort(backend)
	if err != nil {
		return errInvalid("backends", "%q: want host:port", truncate(backend))
	}
	port, _ := strconv.Atoi(portStr)
	restricted := len(p.AllowCIDRs) > 0 || len(p.AllowSuffixes) > 0
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		if restricted && len(p.AllowCIDRs) == 0 {
			return forbidden("BACKEND_ALLOW", "%s: BACKEND_ALLOW names only DNS suffixes, so backends must be host names", backend)
		}
		addrs = []netip.Addr{a.Unmap()}
	} else {
		name := strings.ToLower(strings.TrimSuffix(host, "."))
		if len(p.AllowSuffixes) > 0 && !hasSuffix(name, p.AllowSuffixes) {
			return forbidden("BACKEND_ALLOW", "%s is not under %s", host, strings.Join(p.AllowSuffixes, ", "))
		}
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		addrs, err = p.lookup(lctx, name)
		if err != nil && len(p.AllowCIDRs) > 0 {
			return forbidden("BACKEND_ALLOW", "%s does not resolve, so it cannot be checked against %s", host, joinPrefixes(p.AllowCIDRs))
		}
		// Without CIDRs to check, a name that does not resolve is nginx's
		// to refuse (422, in its own words).
	}
	for _, a := range addrs {
		if len(p.AllowCIDRs) > 0 && !contains(p.AllowCIDRs, a) {
			return forbidden("BACKEND_ALLOW", "%s (%s) is outside %s", backend, a, joinPrefixes(p.AllowCIDRs))
		}
		if contains(linkLocal, a) && !explicitlyAllows(p.AllowCIDRs, a) {
			return forbidden("link-local", "%s (%s) is a link-local address, where cloud metadata services answer; allow it explicitly in BACKEND_ALLOW if you mean it", backend, a)
		}
		if !p.isLocal(a) {
			continue
		}
		if port == p.APIPort {
			return forbidden("self-proxy", "%s is stream-conductor's own API", backend)
		}
		if p.PortMax > 0 && port >= p.PortMin && port <= p.PortMax {
			return forbidden("loop", "%s is a stream port of this node (PORT_RANGE %d-%d): a stream may not point at another stream", backend, p.PortMin, p.PortMax)
		}
	}
	return nil
}

func (p *BackendPolicy) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if p.Lookup != nil {
		return p.Lookup(ctx, host)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, err
}

// isLocal reports whether a reaches this host: loopback, unspecified, or
// one of its interface addresses.
func (p *BackendPolicy) isLocal(a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	local := p.LocalAddrs
	if local == nil {
		local = interfaceAddrs
	}
	for _, l := range local() {
		if l == a {
			return true
		}
	}
	return false
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

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
