package bans

import (
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/stream"
)

// Observe runs once per line of nginx's session log, on the collector's
// goroutine: its cost bounds how many sessions per second a node can
// judge. A session that ended well costs a status check.
func BenchmarkObserveSuccess(b *testing.B) {
	m := New(Config{Log: zerolog.Nop()})
	m.SetStreams([]stream.Spec{spec(tcp9000, policy3)})
	addr := netip.MustParseAddr("198.51.100.7")
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		m.Observe(tcp9000, addr, 200, now)
	}
}

// Failing sessions from 65,536 sources, each below the ban threshold
// (after 1,000 within a minute): the worst case of tracking, with every
// source tracked and the least recent forgotten at the bound.
func BenchmarkObserveFailuresManySources(b *testing.B) {
	m := New(Config{Log: zerolog.Nop()})
	m.SetStreams([]stream.Spec{spec(tcp9000, &stream.BanPolicy{After: 1000, Within: "1m0s", For: "1h0m0s"})})
	addrs := make([]netip.Addr, 1<<17)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	now := t0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Observe(tcp9000, addrs[i%len(addrs)], 400, now)
		i++
		now = now.Add(time.Microsecond)
	}
}
