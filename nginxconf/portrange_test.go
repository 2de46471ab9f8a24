package nginxconf

import (
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/stream"
)

var rangeRules = Rules{PortMin: 10000, PortMax: 12000, Reserved: []int{11500}}

func TestValidateRange(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   stream.Spec
		want func(stream.Spec) bool
	}{
		{"fixed by default", stream.Spec{Listen: 10000, ListenEnd: 10099, Backends: []string{"10.0.0.5:80"}},
			func(s stream.Spec) bool { return s.PortMode == stream.PortModeFixed && s.ListenEnd == 10099 }},
		{"same: host without port gets the first port", stream.Spec{Listen: 10000, ListenEnd: 10099, PortMode: "same", Backends: []string{"10.0.0.5"}},
			func(s stream.Spec) bool { return s.Backends[0] == "10.0.0.5:10000" }},
		{"same: ipv6 host", stream.Spec{Listen: 10000, ListenEnd: 10001, PortMode: "same", Backends: []string{"2001:DB8::1"}},
			func(s stream.Spec) bool { return s.Backends[0] == "[2001:db8::1]:10000" }},
		{"same: name with the first port", stream.Spec{Listen: 10000, ListenEnd: 10001, PortMode: "same", Backends: []string{"Db.Example:10000"}},
			func(s stream.Spec) bool { return s.Backends[0] == "db.example:10000" }},
		{"a 1000-port udp range", stream.Spec{Protocol: "udp", Listen: 10000, ListenEnd: 10999, Backends: []string{"10.0.0.5:53"}},
			func(s stream.Spec) bool { return s.PortCount() == 1000 }},
		{"listen_end equal to listen is one port", stream.Spec{Listen: 10000, ListenEnd: 10000, PortMode: "fixed", Backends: []string{"a:1"}},
			func(s stream.Spec) bool { return s.ListenEnd == 0 && s.PortMode == "" }},
	} {
		got, err := Validate(tc.in, rangeRules)
		if err != nil || !tc.want(got) {
			t.Errorf("%s: %+v %v", tc.name, got, err)
		}
	}
}

func TestValidateRangeRefuses(t *testing.T) {
	b := []string{"10.0.0.5:80"}
	for _, tc := range []struct {
		name, field, says string
		in                stream.Spec
	}{
		{"too many ports", "listen_end", "at most 1000 ports", stream.Spec{Listen: 10000, ListenEnd: 11000, Backends: b}},
		{"end below first", "listen_end", "below", stream.Spec{Listen: 10000, ListenEnd: 9999, Backends: b}},
		{"end beyond 65535", "listen_end", "1-65535", stream.Spec{Listen: 10000, ListenEnd: 70000, Backends: b}},
		{"leaves PORT_RANGE", "listen_end", "PORT_RANGE", stream.Spec{Listen: 11990, ListenEnd: 12010, Backends: b}},
		{"starts below PORT_RANGE", "listen", "PORT_RANGE", stream.Spec{Listen: 9990, ListenEnd: 10010, Backends: b}},
		{"covers a reserved port", "listen", "reserved", stream.Spec{Listen: 11490, ListenEnd: 11510, Backends: b}},
		{"bad port_mode", "port_mode", "same or fixed", stream.Spec{Listen: 10000, ListenEnd: 10001, PortMode: "mirror", Backends: b}},
		{"same on one port", "port_mode", "range", stream.Spec{Listen: 10000, PortMode: "same", Backends: b}},
		{"same: two backends", "backends", "exactly one", stream.Spec{Listen: 10000, ListenEnd: 10001, PortMode: "same", Backends: []string{"10.0.0.5", "10.0.0.6"}}},
		{"same: another port", "backends", "without a port", stream.Spec{Listen: 10000, ListenEnd: 10001, PortMode: "same", Backends: []string{"10.0.0.5:80"}}},
		{"same: balance", "balance", "nothing to balance", stream.Spec{Listen: 10000, ListenEnd: 10001, PortMode: "same", Backends: []string{"10.0.0.5"}, Balance: "least_conn"}},
		{"same: max_fails", "max_fails", "upstream", stream.Spec{Listen: 10000, ListenEnd: 10001, PortMode: "same", Backends: []string{"10.0.0.5"}, MaxFails: intPtr(2)}},
		{"same: hostile host", "backends", "not allowed", stream.Spec{Listen: 10000, ListenEnd: 10001, PortMode: "same", Backends: []string{"10.0.0.5;\n"}}},
		{"routes with a range", "routes", "cannot route", stream.Spec{Listen: 10000, ListenEnd: 10001,
			Routes: []stream.Route{{ServerName: "a.example", Backends: b}}}},
	} {
		_, err := Validate(tc.in, rangeRules)
		fe, ok := err.(*FieldError)
		if !ok || fe.Field != tc.field || !strings.Contains(fe.Message, tc.says) {
			t.Errorf("%s: %v, want field %s saying %q", tc.name, err, tc.field, tc.says)
		}
	}
}

// A file tells its range's last port; other files their own port.
func TestFileLastPort(t *testing.T) {
	s, err := Validate(stream.Spec{Listen: 10000, ListenEnd: 10099, PortMode: "same", Backends: []string{"10.0.0.5"}}, Rules{})
	if err != nil {
		t.Fatal(err)
	}
	_, body, err := Render(s, nil, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := FileLastPort(body, 10000); got != 10099 {
		t.Errorf("range file: %d", got)
	}
	_, body, _ = Render(stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"10.0.0.5:1"}}, nil, RenderOptions{})
	if got := FileLastPort(body, 9000); got != 9000 {
		t.Errorf("single-port file: %d", got)
	}
	if got := FileLastPort([]byte("# x\n# ports 9001-9005 (5)\n"), 9000); got != 9000 {
		t.Errorf("a file naming other ports: %d", got)
	}
}

// A range may not reach into the kernel's ephemeral ports unless they
// are reserved; the refusal gives the sysctl that reserves them, keeping
// the ports reserved already.
func TestValidateRangeKeepsOutOfEphemeralPorts(t *testing.T) {
	r := Rules{Ephemeral: procfs.PortRange{Lo: 32768, Hi: 60999}, KernelReserved: []procfs.PortRange{{Lo: 8080, Hi: 8080}, {Lo: 40000, Hi: 40099}}}
	b := []string{"10.0.0.5:80"}
	for _, ok := range []stream.Spec{
		{Listen: 30000, ListenEnd: 30999, Backends: b},
		{Listen: 40000, ListenEnd: 40099, Backends: b}, // reserved
		{Listen: 61000, ListenEnd: 61999, Backends: b},
		{Listen: 45000, Backends: b}, // one port: as before
	} {
		if _, err := Validate(ok, r); err != nil {
			t.Errorf("%s: %v", ok.Ports(), err)
		}
	}
	_, err := Validate(stream.Spec{Listen: 32700, ListenEnd: 32799, Backends: b}, r)
	fe, _ := err.(*FieldError)
	if fe == nil || fe.Field != "listen" || !strings.Contains(fe.Message, "ephemeral ports 32768-60999") ||
		!strings.Contains(fe.Message, "sysctl -w net.ipv4.ip_local_reserved_ports=8080,40000-40099,32700-32799") {
		t.Errorf("a range into the ephemeral ports: %v", err)
	}
	if _, err := Validate(stream.Spec{Listen: 40050, ListenEnd: 40100, Backends: b}, r); err == nil {
		t.Error("a range one port past the reserved ones was accepted")
	}
}
