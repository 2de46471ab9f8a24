package health

import (
	"context"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// The backends of a routed stream's routes are probed like its default,
// and Of lists them all.
func TestRoundProbesRouteBackends(t *testing.T) {
	live, deadAddr := liveAndDead(t)
	s := stream.Spec{Protocol: stream.TCP, Listen: 443, Routes: []stream.Route{
		{ServerName: "a.example", Backends: []string{live}},
		{ServerName: "b.example", Backends: []string{deadAddr, live}},
	}}
	p := New(fixed{s})
	p.Round(context.Background())
	got := p.Of(s)
	if len(got) != 2 || got[0].Backend != live || got[0].State != Up ||
		got[1].Backend != deadAddr || got[1].State != Down {
		t.Fatalf("route backends: %+v", got)
	}
}
