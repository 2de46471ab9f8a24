package procfs

import (
	"slices"
	"testing"
)

func TestParsePortList(t *testing.T) {
	got, err := ParsePortList("8080,9000-9100")
	if err != nil || !slices.Equal(got, []PortRange{{8080, 8080}, {9000, 9100}}) || got[1].String() != "9000-9100" || got[0].String() != "8080" {
		t.Errorf("ParsePortList = %v %v", got, err)
	}
	if got, err := ParsePortList(""); err != nil || got != nil {
		t.Errorf("empty: %v %v", got, err)
	}
	if _, err := ParsePortList("80,x"); err == nil {
		t.Error("a bad list was accepted")
	}
	lo, _, err := EphemeralPorts()
	if err != nil || lo.Lo <= 0 || lo.Hi < lo.Lo {
		t.Errorf("EphemeralPorts on this host: %v %v", lo, err)
	}
}
