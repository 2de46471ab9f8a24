package health

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

type fixed []stream.Spec

func (f fixed) List() ([]stream.Spec, uint64) { return f, 1 }

func TestRoundProbesTCPBackends(t *testing.T) {
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
	tcp := stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{ln.Addr().String(), deadAddr}}
	udp := stream.Spec{Protocol: stream.UDP, Listen: 53, Backends: []string{"127.0.0.1:53"}}
	p := New(fixed{tcp, udp})
	if got := p.Of(tcp); got[0].State != Unknown {
		t.Fatalf("before any round: %+v", got)
	}
	p.Round(context.Background())
	got := p.Of(tcp)
	if got[0].State != Up || got[1].State != Down || got[1].Error == "" || got[0].Since.IsZero() {
		t.Fatalf("after a round: %+v", got)
	}
	since := got[0].Since
	p.Round(context.Background())
	if p.Of(tcp)[0].Since != since {
		t.Fatal("since moved without a change of state")
	}
	if u := p.Of(udp); u[0].State != Unknown {
		t.Fatalf("UDP backend: %+v", u)
	}
}

// A backend not probed yet has no "since": it is left out of the JSON
// rather than shown as the year 1.
func TestUnprobedBackendHasNoSince(t *testing.T) {
	b, err := json.Marshal(Backend{Backend: "127.0.0.1:1", State: Unknown})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "since") {
		t.Fatalf("unprobed backend JSON %s has a since field", b)
	}
	b, _ = json.Marshal(Backend{Backend: "127.0.0.1:1", State: Up, Since: time.Unix(1, 0).UTC()})
	if !strings.Contains(string(b), `"since":"1970-01-01T00:00:01Z"`) {
		t.Fatalf("probed backend JSON %s lacks its since", b)
	}
}
