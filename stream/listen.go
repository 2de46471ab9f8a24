package stream

import "net/netip"

// ListenAddr is the socket address nginx binds for s, where defaultBind
// is the address of streams that name none (empty: every IPv4 address,
// 0.0.0.0). Its String is how nginx prints it in its messages
// ("0.0.0.0:9000", "127.0.0.1:9000", "[::1]:9000"), and what the
// renderer writes in the listen directive. Both addresses are validated
// IP literals (brackets allowed); anything else counts as 0.0.0.0.
func (s Spec) ListenAddr(defaultBind string) netip.AddrPort {
	bind := s.Bind
	if bind == "" {
		bind = defaultBind
	}
	a, err := netip.ParseAddr(trimBrackets(bind))
	if err != nil {
		a = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(s.Listen))
}

// ParseListenAddr reads a socket address as nginx prints it
// ("127.0.0.1:9000", "[::1]:9000"), for comparing with ListenAddr.
func ParseListenAddr(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, err
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func trimBrackets(s string) string {
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}
