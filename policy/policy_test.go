package policy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

func TestBackendPolicy(t *testing.T) {
	cidrs, suffixes, err := ParseAllow("10.0.0.0/8, .internal, 192.168.1.5")
	if err != nil || len(cidrs) != 2 || len(suffixes) != 1 {
		t.Fatalf("parse: %v %v %v", cidrs, suffixes, err)
	}
	if _, _, err := ParseAllow("10.0.0.0/8,internal"); err == nil {
		t.Fatal("a suffix without a dot was accepted")
	}
	names := map[string][]netip.Addr{
		"db.internal":      {netip.MustParseAddr("10.1.2.3")},
		"mixed.internal":   {netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("8.8.8.8")},
		"loop.example":     {netip.MustParseAddr("127.0.0.1")},
		"metadata.example": {netip.MustParseAddr("169.254.169.254")},
		"public.example":   {netip.MustParseAddr("93.184.216.34")},
	}
	lookup := func(_ context.Context, h string) ([]netip.Addr, error) {
		if a, ok := names[h]; ok {
			return a, nil
		}
		return nil, errors.New("no such host")
	}
	local := func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("192.0.2.10")} }
	open := &Backends{APIPort: 8080, PortMin: 9000, PortMax: 9009, Lookup: lookup, LocalAddrs: local}
	strict := &Backends{AllowCIDRs: cidrs, AllowSuffixes: suffixes, APIPort: 8080, PortMin: 9000, PortMax: 9009, Lookup: lookup, LocalAddrs: local}
	onlyCIDR := &Backends{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Lookup: lookup, LocalAddrs: local}
	// One local address named exactly: a service on the stream ports at
	// another address of this host (port_mode same); 127.0.0.1 stays a loop.
	hostOK := &Backends{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("127.0.0.0/8")},
		APIPort: 8080, PortMin: 9000, PortMax: 9009, Lookup: lookup, LocalAddrs: local}
	metaOK := &Backends{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32")}, Lookup: lookup, LocalAddrs: local}
	for _, tc := range []struct {
		p       *Backends
		backend string
		rule    string // "" = allowed
	}{
		{open, "10.1.2.3:5432", ""},
		{open, "public.example:443", ""},
		{open, "unknown.example:80", ""}, // nginx will say host not found
		{open, "127.0.0.1:8080", "self-proxy"},
		{open, "192.0.2.10:8080", "self-proxy"},
		{open, "[::1]:8080", "self-proxy"},
		{open, "0.0.0.0:8080", "self-proxy"},
		{open, "loop.example:8080", "self-proxy"},
		{open, "127.0.0.1:9003", "loop"},
		{open, "loop.example:9009", "loop"},
		{open, "127.0.0.1:9010", ""},
		{open, "169.254.169.254:80", "link-local"},
		{open, "metadata.example:80", "link-local"},
		{open, "[fe80::1]:80", "link-local"},
		{metaOK, "169.254.169.254:80", ""},
		{hostOK, "127.0.0.2:9003", ""},
		{hostOK, "127.0.0.1:9003", "loop"},
		{hostOK, "127.0.0.3:9003", "loop"},
		{hostOK, "127.0.0.2:8080", "self-proxy"},
		{strict, "db.internal:5432", ""},
		{strict, "mixed.internal:5432", "BACKEND_ALLOW"},
		{strict, "public.example:443", "BACKEND_ALLOW"},
		{strict, "10.9.9.9:22", ""},
		{strict, "192.168.1.5:22", ""},
		{strict, "192.168.1.6:22", "BACKEND_ALLOW"},
		{strict, "nope.internal:22", "BACKEND_ALLOW"},
		{onlyCIDR, "db.internal:5432", ""},
		{onlyCIDR, "public.example:443", "BACKEND_ALLOW"},
		{&Backends{AllowSuffixes: []string{".internal"}, Lookup: lookup, LocalAddrs: local}, "10.1.2.3:22", "BACKEND_ALLOW"},
	} {
		err := tc.p.Check(context.Background(), []string{tc.backend})
		var v *Violation
		switch {
		case tc.rule == "" && err != nil:
			t.Errorf("%s refused: %v", tc.backend, err)
		case tc.rule != "" && (!errors.As(err, &v) || v.Rule != tc.rule || !strings.Contains(err.Error(), "rule: "+tc.rule)):
			t.Errorf("%s: %v, want a refusal by rule %s", tc.backend, err, tc.rule)
		}
	}
}

// A stream may not forward to itself: one of its own ports on an
// address its listen address accepts on (a wildcard takes every local
// address of its family, another address only itself). BACKEND_ALLOW
// naming the address exactly lifts the loop rule for a service on the
// same ports at another address, not this.
func TestCheckLoop(t *testing.T) {
	lookup := func(_ context.Context, h string) ([]netip.Addr, error) {
		if h == "self.example" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
		}
		return nil, errors.New("no such host")
	}
	local := func() []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}
	}
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("192.0.2.10/32")}
	p := &Backends{AllowCIDRs: allow, PortMin: 20000, PortMax: 20999, Lookup: lookup, LocalAddrs: local}
	onLo := &Backends{AllowCIDRs: allow, PortMin: 20000, PortMax: 20999, StreamBind: "127.0.0.1", Lookup: lookup, LocalAddrs: local}
	same := func(bind string) stream.Spec {
		return stream.Spec{Protocol: stream.TCP, Listen: 20000, ListenEnd: 20099, PortMode: stream.PortModeSame, Bind: bind, Backends: []string{"127.0.0.2:20000"}}
	}
	single := func(bind, backend string) stream.Spec {
		return stream.Spec{Protocol: stream.TCP, Listen: 20000, Bind: bind, Backends: []string{backend}}
	}
	fixed := stream.Spec{Protocol: stream.TCP, Listen: 20000, ListenEnd: 20099, PortMode: stream.PortModeFixed, Backends: []string{"127.0.0.2:20050"}}
	for _, tc := range []struct {
		name string
		p    *Backends
		sp   stream.Spec
		loop bool
	}{
		{"same range, default bind every IPv4 address", p, same(""), true},
		{"same range bound to 0.0.0.0", onLo, same("0.0.0.0"), true},
		{"same range bound to the backend's address", p, same("127.0.0.2"), true},
		{"same range bound to another address", p, same("127.0.0.1"), false},
		{"same range, default bind another address", onLo, same(""), false},
		{"same range to a name of the stream's address", p, stream.Spec{Protocol: stream.TCP, Listen: 20000, ListenEnd: 20099, PortMode: stream.PortModeSame, Backends: []string{"self.example:20000"}}, true},
		{"fixed range to one of its own ports", p, fixed, true},
		{"single to its own port on an interface address", p, single("", "192.0.2.10:20000"), true},
		{"single to its own port at 0.0.0.0", onLo, single("", "0.0.0.0:20000"), true},
		{"single to another port", p, single("", "127.0.0.2:20001"), false},
		{"single to a remote address", p, single("", "10.0.0.5:20000"), false},
		{"IPv4 wildcard, IPv6 backend", p, single("", "[2001:db8::10]:20000"), false},
		{"IPv6 wildcard, IPv6 local backend", p, single("::", "[2001:db8::10]:20000"), true},
		{"a name that does not resolve", p, single("", "nowhere.example:20000"), false},
	} {
		err := tc.p.CheckLoop(context.Background(), tc.sp, tc.sp.Backends)
		var v *Violation
		if tc.loop != (err != nil) || (err != nil && (!errors.As(err, &v) || v.Rule != "loop" || !strings.Contains(err.Error(), "connect to itself"))) {
			t.Errorf("%s: %v, want a loop: %v", tc.name, err, tc.loop)
		}
	}
	// The message says what to change.
	err := p.CheckLoop(context.Background(), same(""), []string{"127.0.0.2:20000"})
	want := "with port_mode same each port forwards to the same port on 127.0.0.2 (127.0.0.2), where this stream listens on ports 20000-20099: " +
		"it listens on 0.0.0.0, every local IPv4 address, so nginx would connect to itself; listen on another address (bind, or STREAM_BIND_ADDRESS) or forward elsewhere (rule: loop)"
	if err == nil || err.Error() != want {
		t.Errorf("message:\n%v\nwant\n%s", err, want)
	}
	// The same spec passes Check: BACKEND_ALLOW names 127.0.0.2 exactly.
	if err := p.Check(context.Background(), same("").Backends); err != nil {
		t.Errorf("Check: %v", err)
	}
}
