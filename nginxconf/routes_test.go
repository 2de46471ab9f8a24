package nginxconf

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// routed is a valid routed spec on a port of testRules, changed by f.
func routed(f func(*stream.Spec)) stream.Spec {
	s := stream.Spec{Protocol: stream.TCP, Listen: 9000, Routes: []stream.Route{
		{ServerName: "a.example", Backends: []string{"127.0.0.1:1"}},
		{ServerName: "*.b.example", Backends: []string{"127.0.0.2:1", "127.0.0.3:1"}},
	}}
	if f != nil {
		f(&s)
	}
	return s
}

func withName(name string) stream.Spec {
	return routed(func(s *stream.Spec) {
		s.Routes[0].ServerName = "base.test"
		s.Routes[1].ServerName = name
	})
}

func TestValidateRoutesCanonicalises(t *testing.T) {
	got, err := Validate(routed(func(s *stream.Spec) {
		s.Routes[0].ServerName = "DB.Example.COM."
		s.Routes[0].Backends = []string{"Backend.Example:5432"}
		s.Backends = []string{"[2001:DB8::1]:443", "10.0.0.9:443"}
	}), testRules)
	if err != nil {
		t.Fatal(err)
	}
	r := got.Routes
	if r[0].ServerName != "db.example.com" || r[0].Backends[0] != "backend.example:5432" || r[0].Balance != "" {
		t.Errorf("route 0 not canonical: %+v", r[0])
	}
	if r[1].ServerName != "*.b.example" || r[1].Balance != stream.RoundRobin {
		t.Errorf("route 1 not canonical: %+v", r[1])
	}
	if !slices.Equal(got.Backends, []string{"[2001:db8::1]:443", "10.0.0.9:443"}) || got.Balance != stream.RoundRobin {
		t.Errorf("default not canonical: %v %q", got.Backends, got.Balance)
	}
	// Without a default there are no backends: connections that match
	// no route are closed.
	got, err = Validate(routed(func(s *stream.Spec) { s.Backends = []string{} }), testRules)
	if err != nil || got.Backends != nil || got.Balance != "" {
		t.Errorf("no default: %+v, %v", got, err)
	}
	// A name in canonical form is accepted again as it is: what the API
	// answers can be written back.
	again, err := Validate(got, testRules)
	if err != nil || !again.SameDesired(got) {
		t.Errorf("canonical spec changed on a second pass: %+v, %v", again, err)
	}
}

func TestValidateServerNames(t *testing.T) {
	long := func(n int) string { // a name of n characters, labels of 63
		var b strings.Builder
		for b.Len() < n {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(strings.Repeat("a", min(63, n-b.Len())))
		}
		return b.String()
	}
	if len(long(253)) != 253 || len(long(254)) != 254 {
		t.Fatal("long() is off")
	}
	for name, want := range map[string]string{
		"a.example":             "a.example",
		"A.EXAMPLE":             "a.example",
		"a.example.":            "a.example",
		"*.Example.org":         "*.example.org",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
		"localhost":             "localhost",
		"1a.example":            "1a.example",
		"a-b.c-d.example":       "a-b.c-d.example",
		"default":               "default",
		"include":               "include",
		"example.com1":          "example.com1",
		long(253):               long(253),
		strings.Repeat("a", 63): strings.Repeat("a", 63),
	} {
		got, err := Validate(withName(name), testRules)
		if err != nil {
			t.Errorf("%q rejected: %v", name, err)
			continue
		}
		if got.Routes[1].ServerName != want {
			t.Errorf("%q became %q, want %q", name, got.Routes[1].ServerName, want)
		}
	}
	for _, name := range []string{
		"", ".", "*", "*.", "**.a", "*a.example", "a.*.b", "a.b.*", "*.*.a", ".a.example", "-a.b", "a-.b", "a..b",
		"a.b..", "127.0.0.1", "10.0.0.1.", "::1", "[::1]", "2001:db8::1", "a.123", long(254), "*." + long(252),
		strings.Repeat("a", 64) + ".example", "bücher.example", "é", "$x", "a.example;", "a;b", "a{b", "{",
		"}", "a b", " a.example", "a.example ", "a\nb", "a\tb", "a\x00b", `a"b`, `a\b`, "a'b", "a#b",
		"a_b.example", "a/b", "~^a$", "a:443",
	} {
		_, err := Validate(withName(name), testRules)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "routes[1].server_name" {
			t.Errorf("%q: err = %v, want a routes[1].server_name error", name, err)
		}
	}
}

func TestValidateRoutesRejects(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		in          stream.Spec
	}{
		{"udp", "routes", routed(func(s *stream.Spec) { s.Protocol = stream.UDP })},
		{"upper-case udp", "routes", routed(func(s *stream.Spec) { s.Protocol = "UDP" })},
		{"duplicate name", "routes[1].server_name", routed(func(s *stream.Spec) { s.Routes[1].ServerName = "a.example" })},
		{"duplicate differing in case", "routes[1].server_name", routed(func(s *stream.Spec) { s.Routes[1].ServerName = "A.Example" })},
		{"duplicate with a trailing dot", "routes[1].server_name", routed(func(s *stream.Spec) { s.Routes[1].ServerName = "a.example." })},
		{"route without backends", "routes[0].backends", routed(func(s *stream.Spec) { s.Routes[0].Backends = nil })},
		{"bad route backend", "routes[1].backends", routed(func(s *stream.Spec) { s.Routes[1].Backends[1] = "a;b:1" })},
		{"route backend twice", "routes[1].backends", routed(func(s *stream.Spec) { s.Routes[1].Backends[1] = "127.0.0.2:1" })},
		{"bad route balance", "routes[0].balance", routed(func(s *stream.Spec) { s.Routes[0].Balance = "random" })},
		{"bad default", "default", routed(func(s *stream.Spec) { s.Backends = []string{"x y:1"} })},
		{"balance without a default", "balance", routed(func(s *stream.Spec) { s.Balance = stream.LeastConn })},
		{"too many routes", "routes", routed(func(s *stream.Spec) {
			for i := range MaxRoutes {
				s.Routes = append(s.Routes, stream.Route{ServerName: "n" + strings.Repeat("x", i%50) + ".example" + string(rune('a'+i%26)), Backends: []string{"127.0.0.1:1"}})
			}
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Validate(tc.in, testRules)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a %s error", err, tc.field)
			}
		})
	}
	many := routed(func(s *stream.Spec) {
		s.Routes = nil
		for i := range MaxRoutes {
			s.Routes = append(s.Routes, stream.Route{ServerName: "n" + strings.Repeat("0", i/10) + string(rune('a'+i%10)) + ".example", Backends: []string{"127.0.0.1:1"}})
		}
	})
	if _, err := Validate(many, testRules); err != nil {
		t.Errorf("%d routes refused: %v", MaxRoutes, err)
	}
}

// A server name longer than the map_hash_bucket_size around our files
// holds is refused with the setting to change (nginx would refuse the
// whole configuration, naming no file).
func TestServerNameBoundByTheBucketSize(t *testing.T) {
	for _, tc := range []struct{ bucket, max int }{{0, 44}, {64, 44}, {128, 108}, {256, 236}, {512, 253}} {
		if got := MaxServerNameFor(tc.bucket); got != tc.max {
			t.Errorf("MaxServerNameFor(%d) = %d, want %d", tc.bucket, got, tc.max)
		}
		for _, n := range []int{tc.max, tc.max + 1} {
			if n > 253 {
				continue
			}
			name := nameOfLength(n)
			if len(name) != n {
				t.Fatalf("nameOfLength(%d) has %d characters", n, len(name))
			}
			s := stream.Spec{Protocol: stream.TCP, Listen: 9000, Routes: []stream.Route{{ServerName: name, Backends: []string{"10.0.0.1:443"}}}}
			_, err := Validate(s, Rules{MapHashBucketSize: tc.bucket})
			if (err == nil) != (n <= tc.max) {
				t.Errorf("bucket %d, a %d-character name: %v", tc.bucket, len(name), err)
			}
			if err != nil && !strings.Contains(err.Error(), "map_hash_bucket_size") {
				t.Errorf("bucket %d: %v does not say what to set", tc.bucket, err)
			}
		}
	}
}

// nameOfLength is a host name of n characters, in labels of at most 62.
func nameOfLength(n int) string {
	var parts []string
	for rest := n; rest > 0; {
		l := min(62, rest)
		if rest-l == 1 { // never end on a lone dot
			l--
		}
		parts = append(parts, strings.Repeat("a", l))
		rest -= l + 1
	}
	return strings.Join(parts, ".")
}
