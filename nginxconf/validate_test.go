package nginxconf

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

var testRules = Rules{PortMin: 9000, PortMax: 9009, Reserved: []int{9005}, MapHashBucketSize: ManagedMapHashBucketSize}

func intPtr(v int) *int { return &v }

func TestValidateAcceptsAndCanonicalises(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   stream.Spec
		want func(stream.Spec) bool
	}{
		{"default protocol is tcp", stream.Spec{Listen: 9000, Backends: []string{"a:1"}},
			func(s stream.Spec) bool { return s.Protocol == stream.TCP }},
		{"upper-case protocol", stream.Spec{Protocol: "UDP", Listen: 9000, Backends: []string{"a:1"}},
			func(s stream.Spec) bool { return s.Protocol == stream.UDP }},
		{"host names lower-cased", stream.Spec{Listen: 9000, Backends: []string{"Backend.Example.COM:80"}},
			func(s stream.Spec) bool { return s.Backends[0] == "backend.example.com:80" }},
		{"ipv6 backend canonical", stream.Spec{Listen: 9000, Backends: []string{"[2001:DB8:0::1]:80"}},
			func(s stream.Spec) bool { return s.Backends[0] == "[2001:db8::1]:80" }},
		{"bracketed bind unwrapped", stream.Spec{Listen: 9000, Bind: "[::1]", Backends: []string{"a:1"}},
			func(s stream.Spec) bool { return s.Bind == "::1" }},
		{"nodes sorted without duplicates", stream.Spec{Listen: 9000, Backends: []string{"a:1"}, Nodes: []string{"edge-2", "edge-1", "edge-2"}},
			func(s stream.Spec) bool { return slices.Equal(s.Nodes, []string{"edge-1", "edge-2"}) }},
		{"empty nodes: every node", stream.Spec{Listen: 9000, Backends: []string{"a:1"}, Nodes: []string{}},
			func(s stream.Spec) bool { return s.Nodes == nil }},
		{"bare IP allow becomes a /32", stream.Spec{Listen: 9000, Backends: []string{"a:1"}, Allow: []string{"10.1.2.3", "10.9.9.9/8"}},
			func(s stream.Spec) bool { return s.Allow[0] == "10.1.2.3/32" && s.Allow[1] == "10.0.0.0/8" }},
		{"several backends default to round robin", stream.Spec{Listen: 9000, Backends: []string{"a:1", "b:1"}},
			func(s stream.Spec) bool { return s.Balance == stream.RoundRobin }},
		{"durations normalised", stream.Spec{Listen: 9000, Backends: []string{"a:1"}, ConnectTimeout: "60s", IdleTimeout: "90m"},
			func(s stream.Spec) bool { return s.ConnectTimeout == "1m0s" && s.IdleTimeout == "1h30m0s" }},
		{"range ends are inclusive", stream.Spec{Listen: 9009, Backends: []string{"a:1"}},
			func(s stream.Spec) bool { return s.Listen == 9009 }},
		{"trailing dot host", stream.Spec{Listen: 9000, Backends: []string{"db.internal.:5432"}},
			func(s stream.Spec) bool { return s.Backends[0] == "db.internal.:5432" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Validate(tc.in, testRules)
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if !tc.want(got) {
				t.Fatalf("not canonical: %+v", got)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	ok := func(f func(*stream.Spec)) stream.Spec {
		s := stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"backend:2000"}}
		f(&s)
		return s
	}
	for _, tc := range []struct {
		name  string
		spec  stream.Spec
		field string
	}{
		{"bad protocol", ok(func(s *stream.Spec) { s.Protocol = "http" }), "protocol"},
		{"empty node name", ok(func(s *stream.Spec) { s.Nodes = []string{""} }), "nodes"},
		{"node name with slash", ok(func(s *stream.Spec) { s.Nodes = []string{"edge/1"} }), "nodes"},
		{"node name with space", ok(func(s *stream.Spec) { s.Nodes = []string{"edge 1"} }), "nodes"},
		{"node name too long", ok(func(s *stream.Spec) { s.Nodes = []string{strings.Repeat("e", 129)} }), "nodes"},
		{"too many nodes", ok(func(s *stream.Spec) { s.Nodes = make([]string, 65) }), "nodes"},
		{"port 0", ok(func(s *stream.Spec) { s.Listen = 0 }), "listen"},
		{"port 70000", ok(func(s *stream.Spec) { s.Listen = 70000 }), "listen"},
		{"outside range", ok(func(s *stream.Spec) { s.Listen = 9010 }), "listen"},
		{"API port", ok(func(s *stream.Spec) { s.Listen = 9005 }), "listen"},
		{"no backend", ok(func(s *stream.Spec) { s.Backends = nil }), "backends"},
		{"backend without port", ok(func(s *stream.Spec) { s.Backends = []string{"backend"} }), "backends"},
		{"backend port 0", ok(func(s *stream.Spec) { s.Backends = []string{"backend:0"} }), "backends"},
		{"backend port 65536", ok(func(s *stream.Spec) { s.Backends = []string{"backend:65536"} }), "backends"},
		{"backend port with sign", ok(func(s *stream.Spec) { s.Backends = []string{"backend:+80"} }), "backends"},
		{"semicolon", ok(func(s *stream.Spec) { s.Backends = []string{"a:1; include /etc/passwd"} }), "backends"},
		{"closing brace", ok(func(s *stream.Spec) { s.Backends = []string{"a:1}"} }), "backends"},
		{"opening brace", ok(func(s *stream.Spec) { s.Backends = []string{"a{:1"} }), "backends"},
		{"space", ok(func(s *stream.Spec) { s.Backends = []string{"a b:1"} }), "backends"},
		{"newline", ok(func(s *stream.Spec) { s.Backends = []string{"a:1\nserver {"} }), "backends"},
		{"dollar", ok(func(s *stream.Spec) { s.Backends = []string{"$host:1"} }), "backends"},
		{"double quote", ok(func(s *stream.Spec) { s.Backends = []string{`"a":1`} }), "backends"},
		{"single quote", ok(func(s *stream.Spec) { s.Backends = []string{"'a':1"} }), "backends"},
		{"hash", ok(func(s *stream.Spec) { s.Backends = []string{"a#:1"} }), "backends"},
		{"backslash", ok(func(s *stream.Spec) { s.Backends = []string{`a\:1`} }), "backends"},
		{"NUL", ok(func(s *stream.Spec) { s.Backends = []string{"a\x00:1"} }), "backends"},
		{"unicode look-alike", ok(func(s *stream.Spec) { s.Backends = []string{"bаckend:1"} }), "backends"},
		{"unbracketed ipv6", ok(func(s *stream.Spec) { s.Backends = []string{"::1:80"} }), "backends"},
		{"ipv6 zone", ok(func(s *stream.Spec) { s.Backends = []string{"[fe80::1%eth0]:80"} }), "backends"},
		{"bad ipv4", ok(func(s *stream.Spec) { s.Backends = []string{"300.1.1.1:80"} }), "backends"},
		{"label too long", ok(func(s *stream.Spec) { s.Backends = []string{strings.Repeat("a", 64) + ".com:80"} }), "backends"},
		{"name too long", ok(func(s *stream.Spec) { s.Backends = []string{strings.Repeat("a.", 130) + "com:80"} }), "backends"},
		{"leading hyphen", ok(func(s *stream.Spec) { s.Backends = []string{"-a.com:80"} }), "backends"},
		{"duplicate backend", ok(func(s *stream.Spec) { s.Backends = []string{"a:1", "a:1"} }), "backends"},
		{"bad balance", ok(func(s *stream.Spec) { s.Balance = "random" }), "balance"},
		{"bad bind", ok(func(s *stream.Spec) { s.Bind = "localhost" }), "bind"},
		{"bind with port", ok(func(s *stream.Spec) { s.Bind = "127.0.0.1:80" }), "bind"},
		{"bad CIDR", ok(func(s *stream.Spec) { s.Allow = []string{"10.0.0.0/33"} }), "allow"},
		{"CIDR injection", ok(func(s *stream.Spec) { s.Allow = []string{"all; allow all"} }), "allow"},
		{"connect timeout too short", ok(func(s *stream.Spec) { s.ConnectTimeout = "10ms" }), "connect_timeout"},
		{"connect timeout too long", ok(func(s *stream.Spec) { s.ConnectTimeout = "2h" }), "connect_timeout"},
		{"idle timeout garbage", ok(func(s *stream.Spec) { s.IdleTimeout = "5 minutes" }), "idle_timeout"},
		{"idle timeout too long", ok(func(s *stream.Spec) { s.IdleTimeout = "200h" }), "idle_timeout"},
		{"fail timeout sub-ms", ok(func(s *stream.Spec) { s.FailTimeout = "1.0000001s" }), "fail_timeout"},
		{"negative max_fails", ok(func(s *stream.Spec) { s.MaxFails = intPtr(-1) }), "max_fails"},
		{"udp proxy protocol", ok(func(s *stream.Spec) { s.Protocol = stream.UDP; s.ProxyProtocol = true }), "proxy_protocol"},
		{"control char in description", ok(func(s *stream.Spec) { s.Description = "a\x1bb" }), "description"},
		{"huge description", ok(func(s *stream.Spec) { s.Description = strings.Repeat("x", MaxDescription+1) }), "description"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Validate(tc.spec, testRules)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("accepted or wrong error type: %v", err)
			}
			if fe.Field != tc.field {
				t.Fatalf("field %q, want %q (%v)", fe.Field, tc.field, err)
			}
		})
	}
}

func TestValidateDoesNotAliasInput(t *testing.T) {
	in := stream.Spec{Listen: 9000, Backends: []string{"A:1"}}
	if _, err := Validate(in, testRules); err != nil {
		t.Fatal(err)
	}
	if in.Backends[0] != "A:1" {
		t.Fatal("Validate changed its argument's slice")
	}
}

func TestNginxTime(t *testing.T) {
	for in, want := range map[string]string{"1s": "1s", "1m0s": "60s", "1.5s": "1500ms", "168h0m0s": "604800s"} {
		if got := NginxTime(in); got != want {
			t.Errorf("NginxTime(%q) = %q, want %q", in, got, want)
		}
	}
}

// numericSpellings are host names that glibc's inet_aton reads as IPv4
// addresses (and nginx would then resolve to them), although no rule that
// looks at addresses sees one: each must be refused as a backend.
var numericSpellings = []string{
	"0x7f000001", "0X7F000001", "0x7f.0x1", "127.0.0.0x1", "0x0", "0x", "0xa9fea9fe", "127.1", "127.0.1",
	"2130706433", "0177.0.0.1", "017700000001", "127.0.0.01", "0", "127.0.0.1.", "10.0x0.0.1",
}

func TestValidateRefusesNumericSpellings(t *testing.T) {
	for _, h := range numericSpellings {
		for _, port := range []string{":80", ":8080"} {
			_, err := Validate(stream.Spec{Listen: 9000, Backends: []string{h + port}}, testRules)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "backends" {
				t.Errorf("%s%s: %v, want refused in backends", h, port, err)
			}
		}
	}
	// Names that only contain digits or hex letters stay names.
	for _, h := range []string{"0x7f.example", "db0x1.internal", "1.2.3.4.nip.example", "cafe.beef", "abc"} {
		if _, err := Validate(stream.Spec{Listen: 9000, Backends: []string{h + ":80"}}, testRules); err != nil {
			t.Errorf("%s:80 refused: %v", h, err)
		}
	}
}
