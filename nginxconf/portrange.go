package nginxconf

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/stream"
)

// validatePorts checks s's port or port range against r, and puts
// port_mode in canonical form: empty for one port, "fixed" by default
// for a range.
func validatePorts(s *stream.Spec, r Rules) error {
	if s.ListenEnd == 0 || s.ListenEnd == s.Listen {
		s.ListenEnd = 0
		if s.PortMode == stream.PortModeSame {
			return fieldErr("port_mode", "\"same\" forwards each port of a range to the same port on the backend: give listen as a range (\"10000-10099\")")
		}
		if s.PortMode != "" && s.PortMode != stream.PortModeFixed {
			return fieldErr("port_mode", "must be same or fixed, not %q", truncate(s.PortMode))
		}
		s.PortMode = ""
		return validatePort(s.Listen, r)
	}
	if err := validatePort(s.Listen, r); err != nil {
		return err
	}
	if !stream.ValidPort(s.ListenEnd) {
		return fieldErr("listen_end", "port must be 1-65535, not %d", s.ListenEnd)
	}
	if s.ListenEnd < s.Listen {
		return fieldErr("listen_end", "a range ends above its first port: %d is below %d", s.ListenEnd, s.Listen)
	}
	if n := s.ListenEnd - s.Listen + 1; n > stream.MaxRangePorts {
		return fieldErr("listen_end", "a range has at most %d ports, not %d (each port is an open file in every nginx process)", stream.MaxRangePorts, n)
	}
	if r.PortMax > 0 && s.ListenEnd > r.PortMax {
		return fieldErr("listen_end", "ports %s leave PORT_RANGE %d-%d", s.Ports(), r.PortMin, r.PortMax)
	}
	for _, p := range r.Reserved {
		if s.Covers(p) {
			return fieldErr("listen", "port %d, in %s, is reserved for the API", p, s.Ports())
		}
	}
	if err := checkEphemeral(*s, r); err != nil {
		return err
	}
	switch s.PortMode {
	case "":
		s.PortMode = stream.PortModeFixed
	case stream.PortModeFixed, stream.PortModeSame:
	default:
		return fieldErr("port_mode", "must be same or fixed, not %q", truncate(s.PortMode))
	}
	if s.Routed() {
		return fieldErr("routes", "a port range cannot route by server name: routes share one port, so give them a single-port stream")
	}
	return nil
}

// checkEphemeral refuses a range with ports in the kernel's ephemeral
// range that are not reserved from it: outgoing connections (nginx's own
// to backends among them) take such ports at random, and nginx's bind()
// of one in use fails the reload (19 of 1,000 ports did, measured). The
// message gives the sysctl that reserves them.
func checkEphemeral(s stream.Spec, r Rules) error {
	e := r.Ephemeral
	lo, hi := max(s.Listen, e.Lo), min(s.ListenEnd, e.Hi)
	if e.Hi == 0 || lo > hi {
		return nil
	}
	for p := lo; p <= hi; p++ {
		if !slices.ContainsFunc(r.KernelReserved, func(k procfs.PortRange) bool { return p >= k.Lo && p <= k.Hi }) {
			want := append(slices.Clone(r.KernelReserved), procfs.PortRange{Lo: s.Listen, Hi: s.ListenEnd})
			parts := make([]string, len(want))
			for i, k := range want {
				parts[i] = k.String()
			}
			return fieldErr("listen", "ports %s reach into the kernel's ephemeral ports %d-%d (net.ipv4.ip_local_port_range), "+
				"which outgoing connections take at random, failing nginx's bind(): choose ports outside it, or reserve them first: "+
				"sysctl -w net.ipv4.ip_local_reserved_ports=%s", s.Ports(), e.Lo, e.Hi, strings.Join(parts, ","))
		}
	}
	return nil
}

// validateSamePort checks the one backend of a range with port_mode
// "same": a host (IP literal or name) without a port, or with the
// range's first port, stored as host:first so that every reader of
// backends (policy, probes, resolution) sees a host:port. Balancing and
// passive health need an upstream, where nginx cannot use $server_port.
func validateSamePort(s *stream.Spec) error {
	if len(s.Backends) != 1 {
		return fieldErr("backends", "with port_mode same give exactly one backend host (each port forwards to the same port on it), not %d", len(s.Backends))
	}
	if s.Balance != "" {
		return fieldErr("balance", "port_mode same has one backend host: nothing to balance")
	}
	if s.MaxFails != nil || s.FailTimeout != "" {
		return fieldErr("max_fails", "port_mode same forwards without an upstream (nginx cannot use the port a client connected to in one): no max_fails or fail_timeout")
	}
	b := s.Backends[0]
	if _, err := stream.ParseBackend(b); err != nil {
		b = sameHostPort(b, s.Listen)
	}
	c, err := stream.ParseBackend(b)
	if err != nil {
		return fieldErr("backends", "%q: %v", truncate(s.Backends[0]), err)
	}
	if c.Port != s.Listen {
		return fieldErr("backends", "%q: with port_mode same each port forwards to the same port: give the host without a port", truncate(s.Backends[0]))
	}
	s.Backends[0] = c.String()
	return nil
}

// sameHostPort is host (an IPv6 literal with or without brackets, an
// IPv4 literal or a name) with port.
func sameHostPort(host string, port int) string {
	h := host
	if len(h) >= 2 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	if a, err := netip.ParseAddr(h); err == nil && a.Is6() {
		return net.JoinHostPort(h, strconv.Itoa(port))
	}
	return host + ":" + strconv.Itoa(port)
}

// rangeLine starts the comment line of a range's file that names its
// ports (see writeHeading).
const rangeLine = "# ports "

// FileLastPort returns the last port of the stream whose rendered file is
// body: a range's (from the comment that names its ports), or first, the
// port of the file's name.
func FileLastPort(body []byte, first int) int {
	i := bytes.Index(body, []byte("\n"+rangeLine))
	if i < 0 {
		return first
	}
	rest := body[i+1+len(rangeLine):]
	if j := bytes.IndexAny(rest, " \n"); j >= 0 {
		rest = rest[:j]
	}
	f, last, err := stream.ParsePorts(string(rest))
	if err != nil || f != first {
		return first
	}
	return last
}
