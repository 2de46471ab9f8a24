package policy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
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
