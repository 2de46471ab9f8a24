package desired

import (
	"errors"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

func TestCheckOverlaps(t *testing.T) {
	r := func(p stream.Protocol, first, last int) stream.Spec {
		return stream.Spec{Protocol: p, Listen: first, ListenEnd: last}
	}
	one := func(port int) stream.Spec { return stream.Spec{Protocol: stream.TCP, Listen: port} }
	for _, tc := range []struct {
		name   string
		specs  []stream.Spec
		other  string // "" = no overlap
		ports  string
		stream string
	}{
		{"disjoint", []stream.Spec{r(stream.TCP, 10, 19), one(20), one(9), r(stream.TCP, 21, 30)}, "", "", ""},
		{"other protocol", []stream.Spec{r(stream.TCP, 10, 19), r(stream.UDP, 10, 19), {Protocol: stream.UDP, Listen: 15}}, "udp/10-19", "15", "udp/15"},
		{"single inside", []stream.Spec{one(15), r(stream.TCP, 10, 19)}, "tcp/10-19", "15", "tcp/15"},
		{"behind a short one", []stream.Spec{r(stream.TCP, 10, 40), one(12), r(stream.TCP, 30, 35)}, "tcp/10-40", "12", "tcp/12"},
		{"nested far", []stream.Spec{r(stream.TCP, 10, 100), one(11), one(12), r(stream.TCP, 90, 110)}, "tcp/10-100", "11", "tcp/11"},
	} {
		err := CheckOverlaps(tc.specs)
		var pc *PortConflictError
		if tc.other == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.As(err, &pc) || pc.Other != tc.other || pc.Ports != tc.ports || pc.Stream != tc.stream {
			t.Errorf("%s: %v, want %s's port %s taken by %s", tc.name, err, tc.stream, tc.ports, tc.other)
		}
	}
}
