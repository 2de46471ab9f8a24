package stream

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Limits on a backend's host name.
const (
	MaxHostLength  = 253
	maxLabelLength = 63
)

// Backend is one place a stream forwards to: a host name or an IP
// literal, and a port. A spec keeps its backends as their text (the JSON
// the API answers and the store keeps); ParseBackend is the one parser
// of that text, and String gives it back in canonical form.
type Backend struct {
	// Host is a lower-case RFC 1123 name, or the IP literal's text.
	Host string
	// Addr is the address when Host is an IP literal, else invalid.
	Addr netip.Addr
	Port int
}

// IsIP reports whether b names an address rather than a host name.
func (b Backend) IsIP() bool { return b.Addr.IsValid() }

// String returns b in canonical form: "host:2000", "10.0.0.1:2000",
// "[2001:db8::1]:2000".
func (b Backend) String() string { return net.JoinHostPort(b.Host, strconv.Itoa(b.Port)) }

// ParseBackend checks one backend "host:port" and returns it parsed: a
// lower-case RFC 1123 name or an IP literal (IPv6 in brackets), and a
// decimal port 1-65535.
func ParseBackend(s string) (Backend, error) {
	if s == "" {
		return Backend{}, fmt.Errorf("empty backend")
	}
	if len(s) > MaxHostLength+8 {
		return Backend{}, fmt.Errorf("longer than %d characters", MaxHostLength+8)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return Backend{}, fmt.Errorf("character %q is not allowed (letters, digits, '.', '-', ':' and [] only)", c)
		}
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Backend{}, fmt.Errorf("want host:port (IPv6 as [addr]:port)")
	}
	n, err := ParsePort(port)
	if err != nil {
		return Backend{}, err
	}
	if strings.HasPrefix(s, "[") {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Is4In6() {
			return Backend{}, fmt.Errorf("%q is not an IPv6 address", host)
		}
		return Backend{Host: a.String(), Addr: a, Port: n}, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Is4() {
			return Backend{}, fmt.Errorf("IPv6 addresses need brackets: [%s]:%s", host, port)
		}
		return Backend{Host: a.String(), Addr: a, Port: n}, nil
	}
	if err := checkHostName(host); err != nil {
		return Backend{}, err
	}
	return Backend{Host: strings.ToLower(host), Port: n}, nil
}

// checkHostName enforces RFC 1123 host names.
func checkHostName(h string) error {
	if h == "" {
		return fmt.Errorf("empty host")
	}
	if len(h) > MaxHostLength {
		return fmt.Errorf("host name longer than %d characters", MaxHostLength)
	}
	labels := strings.Split(strings.TrimSuffix(h, "."), ".")
	for _, l := range labels {
		if l == "" || len(l) > maxLabelLength {
			return fmt.Errorf("host name label %q must be 1-%d characters", clip(l), maxLabelLength)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("host name label %q may not start or end with '-'", l)
		}
		if strings.ContainsAny(l, ":[]") {
			return fmt.Errorf("%q is not a host name or IP address", clip(h))
		}
	}
	// A name whose last label is a number (decimal, octal or hex) is
	// what glibc's inet_aton reads as an IPv4 address: 127.1,
	// 0x7f000001, 0x7f.0x1, 127.0.0.0x1 are all 127.0.0.1 to it, and
	// would slip past every rule that looks at addresses.
	if isNumber(labels[len(labels)-1]) {
		return fmt.Errorf("%q is not a valid IPv4 address or host name (write an IPv4 address as four decimal numbers, such as 127.0.0.1)", clip(h))
	}
	return nil
}

// isNumber reports whether l is a number in inet_aton's grammar: decimal,
// octal (leading 0) or hexadecimal (0x, even with no digits).
func isNumber(l string) bool {
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		return strings.Trim(l[2:], "0123456789abcdefABCDEF") == ""
	}
	return strings.Trim(l, "0123456789") == ""
}

// clip keeps error messages short when a client sends something huge.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
