package nginxconf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

func limitsBase(f func(*stream.Spec)) stream.Spec {
	s := stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"backend:2000"}}
	f(&s)
	return s
}

func TestLimits16ValidateCanonicalises(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   stream.Spec
		want func(stream.Spec) bool
	}{
		{"rate units lower-cased", limitsBase(func(s *stream.Spec) { s.UploadRate, s.DownloadRate = "512K", "1M" }),
			func(s stream.Spec) bool { return s.UploadRate == "512k" && s.DownloadRate == "1m" }},
		{"rate without leading zeros", limitsBase(func(s *stream.Spec) { s.UploadRate, s.DownloadRate = "0064k", "01048576" }),
			func(s stream.Spec) bool { return s.UploadRate == "64k" && s.DownloadRate == "1048576" }},
		{"highest rate", limitsBase(func(s *stream.Spec) { s.DownloadRate = "10240m" }),
			func(s stream.Spec) bool { return s.DownloadRate == "10240m" }},
		{"lowest rate", limitsBase(func(s *stream.Spec) { s.UploadRate = "1" }),
			func(s stream.Spec) bool { return s.UploadRate == "1" }},
		{"deny addresses become prefixes, masked, unmapped", limitsBase(func(s *stream.Spec) {
			s.Deny = []string{"192.0.2.7", "10.9.9.9/8", "::ffff:198.51.100.1", "2001:DB8::1/32"}
		}), func(s stream.Spec) bool {
			return slices.Equal(s.Deny, []string{"192.0.2.7/32", "10.0.0.0/8", "198.51.100.1/32", "2001:db8::/32"})
		}},
		{"empty deny is none", limitsBase(func(s *stream.Spec) { s.Deny = []string{} }),
			func(s stream.Spec) bool { return s.Deny == nil }},
		{"deny inside allow", limitsBase(func(s *stream.Spec) { s.Allow, s.Deny = []string{"10.0.0.0/8"}, []string{"10.1.0.0/16"} }),
			func(s stream.Spec) bool { return s.Deny[0] == "10.1.0.0/16" }},
		{"connection limits at nginx's bounds", limitsBase(func(s *stream.Spec) { s.MaxConnections, s.MaxConnectionsPerClient = 65535, 1 }),
			func(s stream.Spec) bool { return s.MaxConnections == 65535 && s.MaxConnectionsPerClient == 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Validate(tc.in, testRules)
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if !tc.want(got) {
				t.Fatalf("not canonical: %+v", got)
			}
			again, err := Validate(got, testRules)
			if err != nil || !again.SameDesired(got) {
				t.Fatalf("canonical form is not stable: %+v, %v", again, err)
			}
		})
	}
}

func TestLimits16ValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  stream.Spec
		field string
	}{
		{"negative max_connections", limitsBase(func(s *stream.Spec) { s.MaxConnections = -1 }), "max_connections"},
		{"max_connections beyond nginx", limitsBase(func(s *stream.Spec) { s.MaxConnections = 65536 }), "max_connections"},
		{"negative per client", limitsBase(func(s *stream.Spec) { s.MaxConnectionsPerClient = -5 }), "max_connections_per_client"},
		{"per client beyond nginx", limitsBase(func(s *stream.Spec) { s.MaxConnectionsPerClient = 1 << 40 }), "max_connections_per_client"},
		{"rate zero", limitsBase(func(s *stream.Spec) { s.UploadRate = "0" }), "upload_rate"},
		{"rate 0k", limitsBase(func(s *stream.Spec) { s.UploadRate = "0k" }), "upload_rate"},
		{"rate unit only", limitsBase(func(s *stream.Spec) { s.UploadRate = "k" }), "upload_rate"},
		{"rate in g", limitsBase(func(s *stream.Spec) { s.DownloadRate = "1g" }), "download_rate"},
		{"rate fraction", limitsBase(func(s *stream.Spec) { s.DownloadRate = "1.5m" }), "download_rate"},
		{"rate negative", limitsBase(func(s *stream.Spec) { s.DownloadRate = "-1m" }), "download_rate"},
		{"rate with sign", limitsBase(func(s *stream.Spec) { s.DownloadRate = "+1m" }), "download_rate"},
		{"rate with space", limitsBase(func(s *stream.Spec) { s.DownloadRate = "1 m" }), "download_rate"},
		{"rate with unit word", limitsBase(func(s *stream.Spec) { s.DownloadRate = "1mb" }), "download_rate"},
		{"rate per second spelled", limitsBase(func(s *stream.Spec) { s.DownloadRate = "1m/s" }), "download_rate"},
		{"rate too high", limitsBase(func(s *stream.Spec) { s.DownloadRate = "10241m" }), "download_rate"},
		{"rate overflow", limitsBase(func(s *stream.Spec) { s.DownloadRate = "99999999999999999999" }), "download_rate"},
		{"rate injection", limitsBase(func(s *stream.Spec) { s.UploadRate = "1m; proxy_pass evil:1" }), "upload_rate"},
		{"rate newline", limitsBase(func(s *stream.Spec) { s.UploadRate = "1m\n}" }), "upload_rate"},
		{"rate variable", limitsBase(func(s *stream.Spec) { s.UploadRate = "$rate" }), "upload_rate"},
		{"deny all", limitsBase(func(s *stream.Spec) { s.Deny = []string{"all"} }), "deny"},
		{"deny bad CIDR", limitsBase(func(s *stream.Spec) { s.Deny = []string{"10.0.0.0/33"} }), "deny"},
		{"deny host name", limitsBase(func(s *stream.Spec) { s.Deny = []string{"evil.example"} }), "deny"},
		{"deny zone", limitsBase(func(s *stream.Spec) { s.Deny = []string{"fe80::1%eth0"} }), "deny"},
		{"deny injection", limitsBase(func(s *stream.Spec) { s.Deny = []string{"10.0.0.1; allow all"} }), "deny"},
		{"deny twice once canonical", limitsBase(func(s *stream.Spec) { s.Deny = []string{"10.0.0.1", "10.0.0.1/32"} }), "deny"},
		{"too many deny", limitsBase(func(s *stream.Spec) { s.Deny = make([]string, MaxDeny+1) }), "deny"},
		{"deny equal to allow", limitsBase(func(s *stream.Spec) { s.Allow, s.Deny = []string{"10.0.0.0/8"}, []string{"10.0.0.0/8"} }), "deny"},
		{"deny covering allow", limitsBase(func(s *stream.Spec) { s.Allow, s.Deny = []string{"10.1.2.3"}, []string{"10.0.0.0/8"} }), "deny"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Validate(tc.spec, testRules)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError on %s", err, tc.field)
			}
			if len(fe.Message) > 300 {
				t.Errorf("message of %d bytes", len(fe.Message))
			}
		})
	}
}

// The zones of two streams never share a name, even on the same port
// with the other protocol, and a stream's names do not change when its
// limits do (a reload keeps the zone, and its count of open sessions).
func TestLimits16ZoneNamesUniqueAndStable(t *testing.T) {
	zones := func(s stream.Spec) []string {
		_, body := mustRender(t, s)
		var names []string
		for _, l := range strings.Split(string(body), "\n") {
			if _, z, ok := strings.Cut(l, " zone="); ok && strings.HasPrefix(l, "limit_conn_zone ") {
				names = append(names, z)
			}
		}
		return names
	}
	tcp := limitsBase(func(s *stream.Spec) {
		s.Backends = []string{"127.0.0.1:1"}
		s.MaxConnections, s.MaxConnectionsPerClient = 5, 1
	})
	udp := tcp.Clone()
	udp.Protocol = stream.UDP
	other := tcp.Clone()
	other.Listen = 9001
	seen := map[string]bool{}
	for _, s := range []stream.Spec{tcp, udp, other} {
		zs := zones(s)
		if len(zs) != 2 {
			t.Fatalf("%s: zones %v", s.ID(), zs)
		}
		for _, z := range zs {
			if seen[z] {
				t.Fatalf("zone %s declared by two streams", z)
			}
			seen[z] = true
		}
	}
	changed := tcp.Clone()
	changed.MaxConnections, changed.MaxConnectionsPerClient = 60000, 300
	if a, b := zones(tcp), zones(changed); !slices.Equal(a, b) {
		t.Fatalf("zones changed with the limits: %v -> %v", a, b)
	}
}

// Two limited streams in one nginx (and in one shard of the pool) load
// together: their zones do not collide.
func TestLimits16TwoStreamsPassNginxTest(t *testing.T) {
	bin := nginxBinary(t)
	dir := t.TempDir()
	for _, s := range []stream.Spec{
		loadCase(t, "limits"),
		limitsBase(func(s *stream.Spec) {
			s.Listen, s.Backends, s.MaxConnections, s.MaxConnectionsPerClient = 9010, []string{"127.0.0.1:1"}, 1, 1
			s.Protocol = stream.UDP
		}),
	} {
		v, err := Validate(s, Rules{})
		if err != nil {
			t.Fatal(err)
		}
		name, body := mustRender(t, v)
		if !bytes.Contains(body, []byte("limit_conn ")) {
			t.Fatalf("no limit_conn in %s", body)
		}
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := nginxTest(t, bin, dir); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

// FuzzLimits16ValidateRender holds that the limits and deny list of a
// spec Validate accepts render as exactly the directives they stand for,
// with nothing a client sent reaching the file otherwise: one zone per
// connection limit at stream {} level, deny entries before allow.
func FuzzLimits16ValidateRender(f *testing.F) {
	f.Add("tcp", 9000, 10, 2, "512k", "1m", "10.0.0.1", "10.0.0.0/8")
	f.Add("udp", 9001, 65535, 0, "", "1048576", "2001:db8::/32", "")
	f.Add("tcp", 9002, -1, 65536, "1g", "1.5m", "all", "all")
	f.Add("tcp", 9003, 1, 1, "1m; proxy_pass a:1", "1m\n}", "10.0.0.1; allow all", "10.0.0.0/8 }")
	f.Add("tcp", 9004, 0, 5, "0064K", "$x", "::ffff:10.1.1.1", "10.0.0.0/8")
	f.Add("tcp", 99<<16|10000, 100, 3, "64k", "", "192.0.2.0/24", "")
	f.Fuzz(func(t *testing.T, proto string, port, maxConns, perClient int, up, down, deny, allow string) {
		in := fuzzSpec(proto, port, "", "127.0.0.1:2000", "", "", "", "", allow, "")
		in.MaxConnections, in.MaxConnectionsPerClient, in.UploadRate, in.DownloadRate = maxConns, perClient, up, down
		if deny != "" {
			in.Deny = strings.Split(deny, ",")
		}
		s, err := Validate(in, Rules{})
		if err != nil {
			return
		}
		_, body, err := Render(s, nil, RenderOptions{Prefix: "stream-"})
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		checkBlocks(t, s, body)
		checkLimitLines(t, s, string(body))
	})
}

// checkLimitLines holds that body has the limit directives of s, each
// value exactly as Validate left it, deny entries before allow ones, and
// no other line than those render may write.
func checkLimitLines(t *testing.T, s stream.Spec, body string) {
	t.Helper()
	var zones, limits, denies, allows int
	lastDeny, firstAllow := -1, -1
	for i, line := range strings.Split(strings.TrimSpace(body), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || line == "}" {
			continue
		}
		if !allowedLine(line) || strings.Count(line, ";") > 1 || strings.ContainsAny(line, "\"'\\#{}") && !strings.HasSuffix(line, " {") {
			t.Fatalf("unexpected line %q in:\n%s", line, body)
		}
		f := strings.Fields(strings.TrimSuffix(line, ";"))
		switch f[0] {
		case "limit_conn_zone":
			zones++
		case "limit_conn":
			limits++
		case "proxy_upload_rate":
			if f[1] != s.UploadRate {
				t.Fatalf("%q for upload_rate %q", line, s.UploadRate)
			}
		case "proxy_download_rate":
			if f[1] != s.DownloadRate {
				t.Fatalf("%q for download_rate %q", line, s.DownloadRate)
			}
		case "deny":
			if f[1] != "all" {
				denies++
				lastDeny = i
				if !slices.Contains(s.Deny, f[1]) {
					t.Fatalf("%q denies what s does not: %v", line, s.Deny)
				}
			}
		case "allow":
			allows++
			if firstAllow < 0 {
				firstAllow = i
			}
		}
	}
	want := 0
	for _, n := range []int{s.MaxConnections, s.MaxConnectionsPerClient} {
		if n > 0 {
			want++
		}
	}
	if zones != want || limits != want || denies != len(s.Deny) || allows != len(s.Allow) {
		t.Fatalf("%d zones, %d limits, %d deny, %d allow for %+v:\n%s", zones, limits, denies, allows, s, body)
	}
	if firstAllow >= 0 && lastDeny > firstAllow {
		t.Fatalf("a deny entry after an allow entry:\n%s", body)
	}
}
