package health

import (
	"context"
	"net"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// The backends of a routed stream's routes are probed like its default,
// and Of lists them all.
func TestRoundProbesRouteBackends(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	s := stream.Spec{Protocol: stream.TCP, Listen: 443, Routes: []stream.Route{
		{ServerName: "a.example", Backends: []string{ln.Addr().String()}},
		{ServerName: "b.example", Backends: []string{deadAddr, ln.Addr().String()}},
	}}
	p := New(fixed{s})
	p.Round(context.Background())
	got := p.Of(s)
	if len(got) != 2 || got[0].Backend != ln.Addr().String() || got[0].State != Up ||
		got[1].Backend != deadAddr || got[1].State != Down {
		t.Fatalf("route backends: %+v", got)
	}
}
