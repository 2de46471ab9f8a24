package nginxconf

import (
	"bytes"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// fuzzSpec builds the spec of one fuzz input. routes, when not empty, is
// a comma-separated list of server names: route i gets b1, and b2 too
// when i is odd; the stream's backends are then its default, or, on an
// even port, there is no default.
//
// A port above 65535 is a range: its low 16 bits are the first port, the
// next 11 the ports beyond it, and an odd count forwards each port to the
// same port (port_mode same).
func fuzzSpec(proto string, port int, bind, b1, b2, balance, ct, it, allow, routes string) stream.Spec {
	in := stream.Spec{Protocol: stream.Protocol(proto), Listen: port, Bind: bind, Backends: []string{b1},
		Balance: balance, ConnectTimeout: ct, IdleTimeout: it}
	if port > 0xffff {
		width := (port >> 16) & 0x7ff
		in.Listen = port & 0xffff
		in.ListenEnd = in.Listen + width
		if width%2 == 1 {
			in.PortMode = stream.PortModeSame
		}
	}
	if b2 != "" {
		in.Backends = append(in.Backends, b2)
	}
	if allow != "" {
		in.Allow = []string{allow}
	}
	if routes == "" {
		return in
	}
	for i, name := range strings.Split(routes, ",") {
		r := stream.Route{ServerName: name, Backends: []string{b1}, Balance: balance}
		if i%2 == 1 && b2 != "" {
			r.Backends = append(r.Backends, b2)
		}
		in.Routes = append(in.Routes, r)
	}
	if port%2 == 0 {
		in.Backends, in.Balance = nil, ""
	}
	return in
}

// FuzzValidateRender holds that every spec Validate accepts renders to
// exactly one server block, one upstream per route and default, and one
// map for a routed stream, and that nothing a client sent reaches the
// file except through the values we emit.
func FuzzValidateRender(f *testing.F) {
	f.Add("tcp", 9000, "", "127.0.0.1:2000", "", "", "", "", "", "")
	f.Add("udp", 9001, "::1", "[::1]:53", "b.example:53", "least_conn", "5s", "1h", "10.0.0.0/8", "")
	f.Add("tcp", 9002, "127.0.0.1", "a:1;}", "", "", "", "", "", "")
	f.Add("tcp", 9003, "", "a:1\nserver {", "$x:1", "hash_client_ip", "1s", "7d", "all", "")
	f.Add("tcp", 9004, "", "include:1", "#a:1", "", "", "", "1.2.3.4", "")
	f.Add("tcp", 9005, "", "127.0.0.1:1", "b.example:2", "least_conn", "", "", "", "a.example,*.b.example,default")
	f.Add("tcp", 9006, "", "127.0.0.1:1", "", "", "", "", "", "a.example,include;,}")
	f.Add("tcp", 99<<16|10000, "127.0.0.1", "10.0.0.5", "", "", "", "", "", "")                // same, 10000-10099
	f.Add("udp", 9<<16|10000, "::1", "[2001:db8::5]", "", "", "", "", "", "")                  // same, ipv6
	f.Add("tcp", 10<<16|10000, "", "127.0.0.1:1", "b.example:2", "least_conn", "", "", "", "") // fixed
	f.Add("tcp", 3<<16|10000, "", "db.example;", "", "", "", "", "", "")                       // same, hostile host
	f.Add("tcp", 1001<<16|10000, "", "10.0.0.5", "", "", "", "", "", "")                       // too many ports
	f.Fuzz(func(t *testing.T, proto string, port int, bind, b1, b2, balance, ct, it, allow, routes string) {
		s, err := Validate(fuzzSpec(proto, port, bind, b1, b2, balance, ct, it, allow, routes), Rules{MapHashBucketSize: ManagedMapHashBucketSize})
		if err != nil {
			return
		}
		addrs := Addrs{}
		for _, n := range Names(s) {
			addrs[n] = []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
		}
		_, body, err := Render(s, addrs, RenderOptions{Prefix: "stream-"})
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		checkBlocks(t, s, body)
		inMap := false
		for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "#"):
				continue
			case line == "}":
				inMap = false
				continue
			case strings.HasPrefix(line, "map "):
				inMap = true
			}
			if inMap {
				if !mapLine(line, s) {
					t.Fatalf("unexpected map line %q in:\n%s", line, body)
				}
				continue
			}
			if !allowedLine(line) {
				t.Fatalf("unexpected directive %q in:\n%s", line, body)
			}
			if strings.Count(line, ";") > 1 || strings.ContainsAny(line, "\"'\\#") {
				t.Fatalf("injected syntax in %q", line)
			}
			if !addressOnly(line) {
				t.Fatalf("nginx would resolve a name in %q", line)
			}
		}
	})
}

// checkBlocks holds that body has one server block, an upstream per
// route and default (or one for several backends), and a map when s is
// routed, and nothing else.
func checkBlocks(t *testing.T, s stream.Spec, body []byte) {
	t.Helper()
	if n := bytes.Count(body, []byte("server {")); n != 1 {
		t.Fatalf("%d server blocks:\n%s", n, body)
	}
	open, closed := bytes.Count(body, []byte("{")), bytes.Count(body, []byte("}"))
	upstreams := bytes.Count(body, []byte("upstream "))
	maps := bytes.Count(body, []byte("map "))
	if open != closed || open != 1+upstreams+maps {
		t.Fatalf("unbalanced or extra blocks:\n%s", body)
	}
	if !s.Routed() {
		if maps != 0 || upstreams > 1 {
			t.Fatalf("extra blocks for a stream without routes:\n%s", body)
		}
		return
	}
	want := len(s.Routes)
	if len(s.Backends) > 0 {
		want++
	}
	if maps != 1 || upstreams != want {
		t.Fatalf("%d maps and %d upstreams for %d routes:\n%s", maps, upstreams, len(s.Routes), body)
	}
}

var (
	mapHead  = regexp.MustCompile(`^map \$ssl_preread_server_name \$stream_conductor_tcp_[0-9]+_route \{$`)
	mapEntry = regexp.MustCompile(`^(\\?)(\S+) stream_conductor_tcp_[0-9]+_r[0-9]+;$`)
	mapDflt  = regexp.MustCompile(`^default (""|stream_conductor_tcp_[0-9]+);$`)
)

// mapLine reports whether line may appear in the map of s: its head,
// "hostnames;", the default, or one route's canonical server name
// (escaped when nginx would read it as a map parameter) and upstream.
func mapLine(line string, s stream.Spec) bool {
	if mapHead.MatchString(line) || line == "hostnames;" || mapDflt.MatchString(line) {
		return true
	}
	m := mapEntry.FindStringSubmatch(line)
	if m == nil {
		return false
	}
	canon, err := stream.CanonicalServerName(m[2])
	escaped := slices.Contains(mapKeywords, m[2])
	return err == nil && canon == m[2] && escaped == (m[1] == `\`)
}

func allowedLine(line string) bool {
	for _, p := range []string{"upstream ", "server ", "server {", "listen ", "proxy_pass ", "proxy_connect_timeout ",
		"proxy_timeout ", "proxy_protocol on;", "allow ", "deny all;", "least_conn;", "hash $remote_addr consistent;",
		"ssl_preread on;", "limit_conn_zone ", "limit_conn ", "limit_conn_log_level info;", "proxy_upload_rate ", "proxy_download_rate ", "deny "} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// addressOnly holds for every line but proxy_pass and server lines, and
// for those when they point at an address, at our upstream or at our
// routing map's variable: nginx is never given a name to resolve.
func addressOnly(line string) bool {
	f := strings.Fields(strings.TrimSuffix(line, ";"))
	if len(f) < 2 || (f[0] != "proxy_pass" && f[0] != "server") || f[1] == "{" {
		return true
	}
	if _, err := netip.ParseAddrPort(f[1]); err == nil {
		return true
	}
	if host, ok := strings.CutSuffix(f[1], ":$server_port"); ok && f[0] == "proxy_pass" {
		_, err := netip.ParseAddr(strings.Trim(host, "[]"))
		return err == nil
	}
	return f[0] == "proxy_pass" && (strings.HasPrefix(f[1], "stream_conductor_") ||
		regexp.MustCompile(`^\$stream_conductor_tcp_[0-9]+_route$`).MatchString(f[1]))
}
