package nginxconf

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// FuzzValidateRender holds that every spec Validate accepts renders to
// exactly one upstream and one server block, and that nothing a client
// sent reaches the file except through the values we emit.
func FuzzValidateRender(f *testing.F) {
	f.Add("tcp", 9000, "", "127.0.0.1:2000", "", "", "", "", "")
	f.Add("udp", 9001, "::1", "[::1]:53", "b.example:53", "least_conn", "5s", "1h", "10.0.0.0/8")
	f.Add("tcp", 9002, "127.0.0.1", "a:1;}", "", "", "", "", "")
	f.Add("tcp", 9003, "", "a:1\nserver {", "$x:1", "hash_client_ip", "1s", "7d", "all")
	f.Add("tcp", 9004, "", "include:1", "#a:1", "", "", "", "1.2.3.4")
	f.Fuzz(func(t *testing.T, proto string, port int, bind, b1, b2, balance, ct, it, allow string) {
		in := stream.Spec{Protocol: stream.Protocol(proto), Listen: port, Bind: bind, Backends: []string{b1},
			Balance: balance, ConnectTimeout: ct, IdleTimeout: it}
		if b2 != "" {
			in.Backends = append(in.Backends, b2)
		}
		if allow != "" {
			in.Allow = []string{allow}
		}
		s, err := Validate(in, Rules{})
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
		if n := bytes.Count(body, []byte("server {")); n != 1 {
			t.Fatalf("%d server blocks:\n%s", n, body)
		}
		open, closed := bytes.Count(body, []byte("{")), bytes.Count(body, []byte("}"))
		if open != closed || open < 1 || open > 2 || bytes.Count(body, []byte("upstream ")) != open-1 {
			t.Fatalf("unbalanced or extra blocks:\n%s", body)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "#") || line == "}" {
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

func allowedLine(line string) bool {
	for _, p := range []string{"upstream ", "server ", "server {", "listen ", "proxy_pass ", "proxy_connect_timeout ",
		"proxy_timeout ", "proxy_protocol on;", "allow ", "deny all;", "least_conn;", "hash $remote_addr consistent;"} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// addressOnly holds for every line but proxy_pass and server lines, and
// for those when they point at an address or at our upstream: nginx is
// never given a name to resolve.
func addressOnly(line string) bool {
	f := strings.Fields(strings.TrimSuffix(line, ";"))
	if len(f) < 2 || (f[0] != "proxy_pass" && f[0] != "server") || f[1] == "{" {
		return true
	}
	if _, err := netip.ParseAddrPort(f[1]); err == nil {
		return true
	}
	return f[0] == "proxy_pass" && strings.HasPrefix(f[1], "stream_conductor_")
}
