package stream

import (
	"fmt"
	"strconv"
	"strings"
)

// Port modes of a stream that listens on a port range.
const (
	// PortModeSame forwards each port of the range to the same port on
	// the one backend host.
	PortModeSame = "same"
	// PortModeFixed forwards every port of the range to the backends as
	// given (host:port): one upstream for the whole range.
	PortModeFixed = "fixed"
)

// MaxRangePorts bounds the ports of one range: each port is one open
// file in nginx's master and in every worker and one worker_connections
// slot, and a 1,000-port range reloads in 60-230 ms on one shard.
const MaxRangePorts = 1000

// IsRange reports whether s listens on a port range, Listen to ListenEnd.
func (s Spec) IsRange() bool { return s.ListenEnd > s.Listen }

// LastPort is the last port s listens on: ListenEnd for a range, else
// Listen.
func (s Spec) LastPort() int {
	if s.IsRange() {
		return s.ListenEnd
	}
	return s.Listen
}

// PortCount is how many ports s listens on (1 for a single port).
func (s Spec) PortCount() int { return s.LastPort() - s.Listen + 1 }

// Covers reports whether s listens on port.
func (s Spec) Covers(port int) bool { return port >= s.Listen && port <= s.LastPort() }

// SamePort reports whether s forwards each port to the same port on its
// backend (port_mode "same").
func (s Spec) SamePort() bool { return s.PortMode == PortModeSame }

// Ports is s's ports as text: "10000-10099" for a range, "9000" for one
// port.
func (s Spec) Ports() string { return PortsText(s.Listen, s.LastPort()) }

// PortsText is the ports first to last as text: "10000-10099", or
// "10000" when last is first.
func PortsText(first, last int) string {
	if last <= first {
		return strconv.Itoa(first)
	}
	return strconv.Itoa(first) + "-" + strconv.Itoa(last)
}

// Ref is how the API names s: "tcp/10000-10099" for a range, its id
// ("tcp/9000") for one port.
func (s Spec) Ref() string { return string(s.Protocol) + "/" + s.Ports() }

// ParsePorts reads "10000" or "10000-10099" (canonical decimal ports,
// the first below the last) and returns the first and last port; a single
// port is its own last.
func ParsePorts(v string) (first, last int, err error) {
	a, b, isRange := strings.Cut(v, "-")
	first, err = ParsePort(a)
	if err != nil {
		return 0, 0, err
	}
	if !isRange {
		return first, first, nil
	}
	last, err = ParsePort(b)
	if err != nil {
		return 0, 0, err
	}
	if last <= first {
		return 0, 0, fmt.Errorf("a port range goes from a lower port to a higher one, not %s", v)
	}
	return first, last, nil
}

// ParseRef reads a stream reference as the API's URLs write it:
// "tcp/9000" or "tcp/10000-10099". It returns the id (the first port) and
// the last port (the first for a single port).
func ParseRef(s string) (ID, int, error) {
	p, ports, ok := strings.Cut(s, "/")
	if !ok {
		return ID{}, 0, fmt.Errorf("stream %q: want protocol/port or protocol/first-last", s)
	}
	proto, err := ParseProtocol(p)
	if err != nil {
		return ID{}, 0, fmt.Errorf("stream %q: %w", s, err)
	}
	first, last, err := ParsePorts(ports)
	if err != nil {
		return ID{}, 0, fmt.Errorf("stream %q: %w", s, err)
	}
	return ID{Protocol: proto, Port: first}, last, nil
}
