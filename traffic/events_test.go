package traffic

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/internal/eventstest"
	"github.com/streamconductor/stream-conductor/stream"
)

// udpCollector counts the UDP streams on ports (UDP: no open sessions
// from the host's socket table, so the counts are the test's alone).
func udpCollector(t *testing.T, ports ...int) *Collector {
	t.Helper()
	c, err := Listen(filepath.Join(t.TempDir(), "traffic.sock"), -1, func(id stream.ID) (Stream, bool) {
		for _, p := range ports {
			if id == (stream.ID{Protocol: stream.UDP, Port: p}) {
				return Stream{Last: id.Port}, true
			}
		}
		return Stream{}, false
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A sample names the streams whose counts moved since the last, with
// their whole counts; nothing when nothing moved, nor at the first.
func TestTrafficSampleOnlyWhenMoved(t *testing.T) {
	c := udpCollector(t, 5300, 5301)
	c.record([]byte("x: 5300 UDP 127.0.0.1 10.0.0.1:53 10 20 0.001 200"), time.Now())
	var s sampler
	if moved := s.next(c.sample()); moved != nil {
		t.Fatalf("the first sample (the baseline) published %v", moved)
	}
	if moved := s.next(c.sample()); moved != nil {
		t.Fatalf("nothing moved, yet %v", moved)
	}
	c.record([]byte("x: 5301 UDP 127.0.0.1 10.0.0.1:53 7 5 0.001 200"), time.Now())
	c.record([]byte("x: 5301 UDP 127.0.0.1 10.0.0.1:53 1 2 0.001 200"), time.Now())
	moved := s.next(c.sample())
	want := events.StreamTraffic{Sessions: 2, BytesIn: 7, BytesOut: 8}
	if len(moved) != 1 || moved["udp/5301"] != want {
		t.Fatalf("moved %v, want udp/5301 alone: %+v", moved, want)
	}
	if moved := s.next(c.sample()); moved != nil {
		t.Fatalf("nothing moved, yet %v", moved)
	}
}

// PublishEvery publishes what moved, once, and stops with its context.
func TestPublishEveryPublishesWhatMoved(t *testing.T) {
	c := udpCollector(t, 5300)
	rec := &eventstest.Recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.PublishEvery(ctx, rec, 5*time.Millisecond)
	}()
	defer func() {
		cancel()
		<-done
	}()
	// Recorded until the sampler's baseline has surely been taken.
	deadline := time.Now().Add(5 * time.Second)
	for rec.Len(events.Traffic) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no traffic event within 5s of a session")
		}
		c.record([]byte("x: 5300 UDP 127.0.0.1 10.0.0.1:53 1 1 0.001 200"), time.Now())
		time.Sleep(5 * time.Millisecond)
	}
	s := eventstest.Data[events.TrafficSample](rec.Take(events.Traffic))[0]
	if st, ok := s.Streams["udp/5300"]; !ok || len(s.Streams) != 1 || st.Sessions == 0 || st.BytesIn != st.Sessions {
		t.Fatalf("sample %+v", s)
	}
}
