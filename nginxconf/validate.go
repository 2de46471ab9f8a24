// Package nginxconf turns stream specs into nginx configuration and nginx's
// messages back into facts. Everything here is pure: no disk, no processes.
package nginxconf

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/stream"
)

// FieldError is a validation failure of one field of a spec.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Rules are the node-specific limits a spec must respect.
type Rules struct {
	// PortMin and PortMax bound the listen port, inclusive.
	PortMin, PortMax int
	// Reserved ports may never be listened on (the API's own port).
	Reserved []int
	// Ephemeral is the kernel's ephemeral port range (Hi 0: unknown) and
	// KernelReserved the ports reserved from it: a port range may not
	// use an ephemeral port that is not reserved.
	Ephemeral      procfs.PortRange
	KernelReserved []procfs.PortRange
	// MapHashBucketSize is the map_hash_bucket_size of the stream {} our
	// files are in; it bounds the server names of routes (0: nginx's
	// default, DefaultMapHashBucketSize).
	MapHashBucketSize int
	// NoSessionLog: nginx's session log does not reach the daemon
	// (external mode), so a ban policy could never trigger.
	NoSessionLog bool
}

// map_hash_bucket_size: nginx's default, and what managed mode writes.
const (
	DefaultMapHashBucketSize = 64
	ManagedMapHashBucketSize = 512
)

// MaxServerNameFor is the longest server name a map with buckets of size
// bucket holds, measured with nginx 1.22: 44 characters for 64, 108 for
// 128, 236 for 256, every DNS name for 512. Longer, nginx -t fails with
// "could not build map_hash", which names no file: refused here instead.
func MaxServerNameFor(bucket int) int {
	if bucket <= 0 {
		bucket = DefaultMapHashBucketSize
	}
	return min(stream.MaxServerNameLength, bucket-20)
}

// Limits on the free-form and list fields.
const (
	MaxBackends    = 64
	MaxAllow       = 256
	MaxDescription = 1024
	MaxNodes       = 64
	// MaxRoutes bounds the routes of one shared port. Each route is an
	// upstream block nginx parses on every reload (1,000 routes took
	// nginx -t 110-260 ms here, an empty config 55-90 ms): 256 keeps one
	// stream's share of a reload small, and is far more names than one
	// port's certificates usually carry.
	MaxRoutes         = 256
	maxMaxFails       = 1000
	minTimeout        = time.Second
	maxConnectTimeout = time.Hour
	maxIdleTimeout    = 7 * 24 * time.Hour
	maxFailTimeout    = time.Hour
)

// Validate checks s against the data model and r, and returns it in
// canonical form (lower-case protocol and host names, bind without brackets,
// masked CIDRs, normalised durations). Only a spec that passed Validate may
// be rendered. The error is a *FieldError naming the first bad field.
func Validate(s stream.Spec, r Rules) (stream.Spec, error) {
	s = s.Clone()
	switch strings.ToLower(string(s.Protocol)) {
	case "", "tcp":
		s.Protocol = stream.TCP
	case "udp":
		s.Protocol = stream.UDP
	default:
		return s, fieldErr("protocol", "must be tcp or udp, not %q", s.Protocol)
	}
	if err := validatePorts(&s, r); err != nil {
		return s, err
	}
	if s.Bind != "" {
		b, err := canonicalBind(s.Bind)
		if err != nil {
			return s, err
		}
		s.Bind = b
	}
	if err := validateForwarding(&s, r); err != nil {
		return s, err
	}
	if s.MaxFails != nil && (*s.MaxFails < 0 || *s.MaxFails > maxMaxFails) {
		return s, fieldErr("max_fails", "must be 0-%d", maxMaxFails)
	}
	var err error
	if s.FailTimeout, err = canonicalDuration("fail_timeout", s.FailTimeout, maxFailTimeout); err != nil {
		return s, err
	}
	if s.ConnectTimeout, err = canonicalDuration("connect_timeout", s.ConnectTimeout, maxConnectTimeout); err != nil {
		return s, err
	}
	if s.IdleTimeout, err = canonicalDuration("idle_timeout", s.IdleTimeout, maxIdleTimeout); err != nil {
		return s, err
	}
	if s.ProxyProtocol && s.Protocol == stream.UDP {
		return s, fieldErr("proxy_protocol", "is supported for tcp streams only")
	}
	if len(s.Allow) > MaxAllow {
		return s, fieldErr("allow", "at most %d entries", MaxAllow)
	}
	for i, a := range s.Allow {
		p, err := canonicalCIDR(a)
		if err != nil {
			return s, fieldErr("allow", "%q is not a CIDR or IP address", truncate(a))
		}
		s.Allow[i] = p
	}
	if dup := firstDuplicate(s.Allow); dup != "" {
		return s, fieldErr("allow", "%q is listed twice", dup)
	}
	if err := validateLimits(&s); err != nil {
		return s, err
	}
	if len(s.Description) > MaxDescription {
		return s, fieldErr("description", "at most %d bytes", MaxDescription)
	}
	if !utf8.ValidString(s.Description) || strings.ContainsFunc(s.Description, isControl) {
		return s, fieldErr("description", "must be UTF-8 text without control characters")
	}
	if s.Nodes, err = canonicalNodes(s.Nodes); err != nil {
		return s, err
	}
	if err := validateBan(&s, r); err != nil {
		return s, err
	}
	return s, nil
}

// validateForwarding checks where s forwards to: its backends, or its
// routes and default, with their balance methods, in place.
func validateForwarding(s *stream.Spec, r Rules) error {
	if s.Routed() {
		return validateRouted(s, r)
	}
	if s.SamePort() {
		return validateSamePort(s)
	}
	if err := canonicalBackends("backends", s.Backends); err != nil {
		return err
	}
	b, err := canonicalBalance("balance", s.Balance, len(s.Backends))
	s.Balance = b
	return err
}

// validateRouted checks a stream that routes by server name: TCP only
// (ssl_preread reads a TLS ClientHello), 1-MaxRoutes routes with distinct
// names, each route's backends and balance like a stream's, and the
// default (the stream's Backends), which may be empty.
func validateRouted(s *stream.Spec, rules Rules) error {
	if s.Protocol != stream.TCP {
		return fieldErr("routes", "are supported for tcp streams only: server names are read from a TLS ClientHello")
	}
	if len(s.Routes) > MaxRoutes {
		return fieldErr("routes", "at most %d routes", MaxRoutes)
	}
	seen := make(map[string]bool, len(s.Routes))
	for i := range s.Routes {
		r := &s.Routes[i]
		field := fmt.Sprintf("routes[%d]", i)
		name, err := stream.CanonicalServerName(r.ServerName)
		if err != nil {
			return fieldErr(field+".server_name", "%s", err.Error())
		}
		if seen[name] {
			return fieldErr(field+".server_name", "%q is routed twice", name)
		}
		if max := MaxServerNameFor(rules.MapHashBucketSize); len(name) > max {
			return fieldErr(field+".server_name", "is %d characters; nginx's map_hash_bucket_size %d holds server names of at most %d: set map_hash_bucket_size 512; in the stream {} of nginx.conf, before the include, and NGINX_MAP_HASH_BUCKET_SIZE=512",
				len(name), cmp.Or(rules.MapHashBucketSize, DefaultMapHashBucketSize), max)
		}
		seen[name] = true
		r.ServerName = name
		if err := canonicalBackends(field+".backends", r.Backends); err != nil {
			return err
		}
		if r.Balance, err = canonicalBalance(field+".balance", r.Balance, len(r.Backends)); err != nil {
			return err
		}
	}
	if len(s.Backends) == 0 {
		s.Backends = nil
		if s.Balance != "" {
			return fieldErr("balance", "applies to the default, and there is none")
		}
		return nil
	}
	if err := canonicalBackends("default", s.Backends); err != nil {
		return err
	}
	b, err := canonicalBalance("balance", s.Balance, len(s.Backends))
	s.Balance = b
	return err
}

// canonicalBalance checks a balance method for n backends: empty means
// round_robin when there are several.
func canonicalBalance(field, b string, n int) (string, error) {
	switch b {
	case "":
		if n > 1 {
			return stream.RoundRobin, nil
		}
	case stream.RoundRobin, stream.LeastConn, stream.HashClientIP:
	default:
		return b, fieldErr(field, "must be round_robin, least_conn or hash_client_ip, not %q", truncate(b))
	}
	return b, nil
}

// canonicalNodes checks the names of the nodes that serve a stream and
// returns them sorted, without duplicates (nil for none: every node).
func canonicalNodes(nodes []string) ([]string, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	if len(nodes) > MaxNodes {
		return nil, fieldErr("nodes", "at most %d node names", MaxNodes)
	}
	for _, n := range nodes {
		if err := stream.CheckNodeName(n); err != nil {
			return nil, fieldErr("nodes", "%s", truncate(err.Error()))
		}
	}
	slices.Sort(nodes)
	return slices.Compact(nodes), nil
}

// canonicalBackends checks the backends of field and puts each in
// canonical form, in place.
func canonicalBackends(field string, bs []string) error {
	if len(bs) == 0 {
		return fieldErr(field, "at least one backend host:port is required")
	}
	if len(bs) > MaxBackends {
		return fieldErr(field, "at most %d backends", MaxBackends)
	}
	for i, b := range bs {
		c, err := stream.ParseBackend(b)
		if err != nil {
			return fieldErr(field, "%q: %v", truncate(b), err)
		}
		bs[i] = c.String()
	}
	if dup := firstDuplicate(bs); dup != "" {
		return fieldErr(field, "%q is listed twice", dup)
	}
	return nil
}

func validatePort(port int, r Rules) error {
	if !stream.ValidPort(port) {
		return fieldErr("listen", "port must be 1-65535, not %d", port)
	}
	if slices.Contains(r.Reserved, port) {
		return fieldErr("listen", "port %d is reserved for the API", port)
	}
	if r.PortMax > 0 && (port < r.PortMin || port > r.PortMax) {
		return fieldErr("listen", "port %d is outside PORT_RANGE %d-%d", port, r.PortMin, r.PortMax)
	}
	return nil
}

func canonicalBind(b string) (string, error) {
	s := strings.TrimSuffix(strings.TrimPrefix(b, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", fieldErr("bind", "%q is not an IPv4 or IPv6 address", truncate(b))
	}
	return a.Unmap().String(), nil
}

func canonicalCIDR(a string) (string, error) {
	if p, err := netip.ParsePrefix(a); err == nil && p.Addr().Zone() == "" {
		return p.Masked().String(), nil
	}
	ip, err := netip.ParseAddr(a)
	if err != nil || ip.Zone() != "" {
		return "", fmt.Errorf("bad CIDR")
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()).String(), nil
}

func canonicalDuration(field, v string, max time.Duration) (string, error) {
	if v == "" {
		return "", nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return "", fieldErr(field, "%q is not a duration like 5s or 10m", truncate(v))
	}
	if d < minTimeout || d > max {
		return "", fieldErr(field, "must be between %v and %v", minTimeout, max)
	}
	if d%time.Millisecond != 0 {
		return "", fieldErr(field, "must be a whole number of milliseconds")
	}
	return d.String(), nil
}

// NginxTime renders a canonical Go duration in nginx's time syntax.
func NginxTime(v string) string {
	d, _ := time.ParseDuration(v)
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
}

func firstDuplicate(xs []string) string {
	seen := make(map[string]bool, len(xs))
	for _, x := range xs {
		if seen[x] {
			return x
		}
		seen[x] = true
	}
	return ""
}

func isControl(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }

// truncate keeps error messages short when a client sends something huge.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
