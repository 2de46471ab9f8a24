package traffic

import (
	"context"
	"time"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/stream"
)

// PublishEvery publishes, every every until ctx ends, the counts of the
// streams whose counts moved since the last sample (events.Traffic):
// nothing when nothing moved. The first sample is the baseline.
func (c *Collector) PublishEvery(ctx context.Context, pub events.Publisher, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var s sampler
	s.next(c.sample())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if moved := s.next(c.sample()); moved != nil {
				pub.Publish(events.Traffic, events.TrafficSample{Streams: moved})
			}
		}
	}
}

// sample returns the counts of every stream that carried something since
// it was created (or the daemon started), or has TCP sessions open now; a
// range's are its totals over its ports.
func (c *Collector) sample() map[string]events.StreamTraffic {
	open := c.active.All() // outside c.mu: it may read the socket table
	active := map[stream.ID]int{}
	for port := range open {
		if id, st, ok := c.resolve(stream.TCP, port); ok { // a local port of a stream, not of a client
			if n := open.on(port, st.Listen); n > 0 {
				active[id] += n
			}
		}
	}
	all := c.All()
	out := make(map[string]events.StreamTraffic, len(all)+len(active))
	for id, s := range all {
		out[id.String()] = events.StreamTraffic{Sessions: s.Sessions, BytesIn: s.BytesIn, BytesOut: s.BytesOut, Active: active[id]}
	}
	for id, n := range active {
		if _, seen := all[id]; !seen {
			out[id.String()] = events.StreamTraffic{Active: n}
		}
	}
	return out
}

// sampler keeps the last sample, to tell which counts moved.
type sampler struct {
	last map[string]events.StreamTraffic
}

// next returns the counts of now that differ from the last sample (nil
// when none do, and on the first sample), and keeps now as the last. A
// stream gone from now is not reported: it was deleted, or its last
// session closed without a session logged yet (it will be).
func (s *sampler) next(now map[string]events.StreamTraffic) map[string]events.StreamTraffic {
	last, first := s.last, s.last == nil
	s.last = now
	if first {
		return nil
	}
	var moved map[string]events.StreamTraffic
	for id, st := range now {
		if old, ok := last[id]; ok && old == st {
			continue
		}
		if moved == nil {
			moved = map[string]events.StreamTraffic{}
		}
		moved[id] = st
	}
	return moved
}
