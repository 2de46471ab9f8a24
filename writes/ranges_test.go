package writes

import (
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// A write probes the ports it adds: all of a new stream's or of one that
// moves, only the new ones of a range that grows, none otherwise.
func TestNewPorts(t *testing.T) {
	r := func(first, last int) stream.Spec {
		return stream.Spec{Protocol: stream.TCP, Listen: first, ListenEnd: last}
	}
	for _, tc := range []struct {
		name        string
		sp, cur     stream.Spec
		exists      bool
		probe       bool
		first, last int
	}{
		{"create", r(100, 199), stream.Spec{}, false, true, 100, 199},
		{"grows", r(100, 199), r(100, 149), true, true, 150, 199},
		{"grows by one", r(100, 150), r(100, 149), true, true, 150, 150},
		{"single becomes a range", r(100, 110), r(100, 0), true, true, 101, 110},
		{"shrinks", r(100, 149), r(100, 199), true, false, 0, 0},
		{"same ports", r(100, 199), r(100, 199), true, false, 0, 0},
	} {
		probe, ok := newPorts(tc.sp, tc.cur, tc.exists)
		if ok != tc.probe || (ok && (probe.Listen != tc.first || probe.LastPort() != tc.last)) {
			t.Errorf("%s: probe %v ports %s", tc.name, ok, probe.Ports())
		}
	}
}
