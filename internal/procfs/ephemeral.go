package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PortRange is the ports Lo to Hi, inclusive.
type PortRange struct{ Lo, Hi int }

// String is the kernel's spelling: "40000-40099", or "8080" for one port.
func (r PortRange) String() string {
	if r.Hi == r.Lo {
		return strconv.Itoa(r.Lo)
	}
	return strconv.Itoa(r.Lo) + "-" + strconv.Itoa(r.Hi)
}

// EphemeralPorts reads the kernel's ephemeral ports (the local ports it
// gives outgoing connections and unbound sockets at random:
// net.ipv4.ip_local_port_range) and those reserved from them
// (net.ipv4.ip_local_reserved_ports).
func EphemeralPorts() (PortRange, []PortRange, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return PortRange{}, nil, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return PortRange{}, nil, fmt.Errorf("ip_local_port_range: %q", b)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return PortRange{}, nil, fmt.Errorf("ip_local_port_range: %q", b)
	}
	b, err = os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
	if err != nil {
		return PortRange{Lo: lo, Hi: hi}, nil, err
	}
	reserved, err := ParsePortList(strings.TrimSpace(string(b)))
	return PortRange{Lo: lo, Hi: hi}, reserved, err
}

// ParsePortList reads the kernel's list of ports: "8080,9000-9100", or
// "" for none.
func ParsePortList(s string) ([]PortRange, error) {
	if s == "" {
		return nil, nil
	}
	var out []PortRange
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(strings.TrimSpace(part), "-")
		lo, err := strconv.Atoi(a)
		if err != nil {
			return nil, fmt.Errorf("port list %q: %w", s, err)
		}
		hi := lo
		if isRange {
			if hi, err = strconv.Atoi(b); err != nil {
				return nil, fmt.Errorf("port list %q: %w", s, err)
			}
		}
		out = append(out, PortRange{Lo: lo, Hi: hi})
	}
	return out, nil
}
