package health

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/internal/eventstest"
	"github.com/streamconductor/stream-conductor/stream"
)

type fixed []stream.Spec

func (f fixed) List() ([]stream.Spec, uint64) { return f, 1 }

func TestRoundProbesTCPBackends(t *testing.T) {
	live, deadAddr := liveAndDead(t)
	tcp := stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{live, deadAddr}}
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

// A backend's change of state is published, with the streams that use
// it: its first result only when it is down, then every up ↔ down, and
// nothing while it stays as it was.
func TestHealthTransitionsArePublished(t *testing.T) {
	down := map[string]bool{"10.0.0.2:80": true}
	var mu sync.Mutex
	specs := fixed{
		{Protocol: stream.TCP, Listen: 9000, Backends: []string{"10.0.0.1:80", "10.0.0.2:80"}},
		{Protocol: stream.TCP, Listen: 9001, Backends: []string{"10.0.0.1:80"}},
	}
	p := New(specs)
	rec := &eventstest.Recorder{}
	p.Events = rec
	p.dial = func(_ context.Context, addr string) error {
		mu.Lock()
		defer mu.Unlock()
		if down[addr] {
			return errors.New("connection refused")
		}
		return nil
	}
	p.Round(context.Background())
	evs := eventstest.Data[events.HealthChange](rec.Take(events.BackendHealth))
	if len(evs) != 1 || evs[0].Address != "10.0.0.2:80" || evs[0].Up || evs[0].Previous != nil || evs[0].Error != "connection refused" ||
		!slices.Equal(evs[0].Streams, []stream.ID{{Protocol: stream.TCP, Port: 9000}}) {
		t.Fatalf("first round published %+v, want 10.0.0.2:80 down (used by tcp/9000) alone", evs)
	}
	p.Round(context.Background())
	if evs := eventstest.Data[events.HealthChange](rec.Take(events.BackendHealth)); len(evs) != 0 {
		t.Fatalf("a round that changed nothing published %+v", evs)
	}
	mu.Lock()
	down = map[string]bool{"10.0.0.1:80": true}
	mu.Unlock()
	p.Round(context.Background())
	got := map[string]events.HealthChange{}
	for _, ev := range eventstest.Data[events.HealthChange](rec.Take(events.BackendHealth)) {
		got[ev.Address] = ev
	}
	if a := got["10.0.0.1:80"]; len(got) != 2 || a.Up || a.Previous == nil || !*a.Previous || len(a.Streams) != 2 {
		t.Fatalf("published %+v; want 10.0.0.1:80 up → down, used by 2 streams", got)
	}
	if b := got["10.0.0.2:80"]; !b.Up || b.Previous == nil || *b.Previous || b.Error != "" {
		t.Fatalf("10.0.0.2:80: %+v, want down → up", b)
	}
}

// liveAndDead returns the address of a listener that accepts (and closes)
// every connection until the test ends, and one where nothing listens.
func liveAndDead(t *testing.T) (live, dead string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead = gone.Addr().String()
	gone.Close()
	return ln.Addr().String(), dead
}
