package stream

import "testing"

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in          string
		first, last int
	}{{"tcp/10000-10099", 10000, 10099}, {"tcp/10000", 10000, 10000}, {"udp/1-65535", 1, 65535}} {
		id, last, err := ParseRef(tc.in)
		if err != nil || id.Port != tc.first || last != tc.last {
			t.Errorf("ParseRef(%q) = %v %d %v", tc.in, id, last, err)
		}
	}
	for _, bad := range []string{"tcp/10099-10000", "tcp/10000-10000", "tcp/0-10", "tcp/10-70000", "tcp/10-", "tcp/-10", "tcp/010-20", "tcp/1-2-3", "sctp/1-2", "tcp10-20"} {
		if _, _, err := ParseRef(bad); err == nil {
			t.Errorf("ParseRef(%q) accepted", bad)
		}
	}
}

func TestRangeSpec(t *testing.T) {
	r := Spec{Protocol: TCP, Listen: 10000, ListenEnd: 10099, PortMode: PortModeSame}
	if !r.IsRange() || r.PortCount() != 100 || !r.Covers(10050) || r.Covers(10100) || r.Covers(9999) || r.Ref() != "tcp/10000-10099" {
		t.Errorf("range: IsRange %v PortCount %d Ref %s", r.IsRange(), r.PortCount(), r.Ref())
	}
	one := Spec{Protocol: TCP, Listen: 9000}
	if one.IsRange() || one.PortCount() != 1 || !one.Covers(9000) || one.Ref() != "tcp/9000" || one.Shown().Range != "" {
		t.Errorf("single port: %+v", one)
	}
	if r.Shown().Range != "10000-10099" {
		t.Errorf("Shown().Range = %q", r.Shown().Range)
	}
	other := r.Clone()
	other.ListenEnd = 10098
	if r.SameDesired(other) {
		t.Error("SameDesired ignores listen_end")
	}
	other = r.Clone()
	other.PortMode = PortModeFixed
	if r.SameDesired(other) {
		t.Error("SameDesired ignores port_mode")
	}
}
