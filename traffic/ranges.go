package traffic

import (
	"net/netip"
	"sort"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// A Stream is what the Collector needs to know of a stream: when it was
// created, the last port it listens on (its id's port, unless it listens
// on a port range) and the address it listens on.
type Stream struct {
	Created time.Time
	Last    int
	// Listen is the address nginx binds the stream's ports on
	// (stream.Spec.ListenAddr): only sockets on an address it accepts on
	// are the stream's open sessions. Invalid: not known, every local
	// address counts.
	Listen netip.Addr
}

// PortStats is one port's share of a range stream's traffic.
type PortStats struct {
	Sessions uint64 `json:"sessions"`
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
}

// span is the ports first to last of a range stream of protocol proto.
type span struct {
	proto       stream.Protocol
	first, last int
}

// rangeIndex holds the range streams sorted by protocol and first port.
// Ranges of one protocol never overlap, so they are sorted by last port
// too, and the range holding a port is found by binary search: a lookup
// costs O(log ranges) whatever the number of streams.
type rangeIndex []span

// newRangeIndex indexes the range streams among specs.
func newRangeIndex(specs []stream.Spec) rangeIndex {
	var idx rangeIndex
	for _, sp := range specs {
		if sp.IsRange() {
			idx = append(idx, span{sp.Protocol, sp.Listen, sp.ListenEnd})
		}
	}
	sort.Slice(idx, func(i, j int) bool {
		if idx[i].proto != idx[j].proto {
			return idx[i].proto < idx[j].proto
		}
		return idx[i].first < idx[j].first
	})
	return idx
}

// find returns the first port of the range of protocol p holding port.
func (idx rangeIndex) find(p stream.Protocol, port int) (first int, ok bool) {
	i := sort.Search(len(idx), func(i int) bool {
		return idx[i].proto > p || idx[i].proto == p && idx[i].last >= port
	})
	if i < len(idx) && idx[i].proto == p && idx[i].first <= port {
		return idx[i].first, true
	}
	return 0, false
}

// SetStreams indexes the port ranges among specs, the whole stream list:
// call it whenever the list changes. Until then a session on a port of a
// new range other than its first is dropped; a deleted or shrunk range is
// never counted, since every hit is checked with the Lookup.
func (c *Collector) SetStreams(specs []stream.Spec) {
	idx := newRangeIndex(specs)
	c.ranges.Store(&idx)
}

// resolve returns the stream that listens on port with protocol p: the
// stream whose id it is, or the range holding it.
func (c *Collector) resolve(p stream.Protocol, port int) (stream.ID, Stream, bool) {
	id := stream.ID{Protocol: p, Port: port}
	if s, ok := c.lookup(id); ok {
		return id, s, true
	}
	idx := c.ranges.Load()
	if idx == nil {
		return id, Stream{}, false
	}
	first, ok := idx.find(p, port)
	if !ok {
		return id, Stream{}, false
	}
	id.Port = first
	s, ok := c.lookup(id)
	if !ok || port > s.Last {
		return id, Stream{}, false
	}
	return id, s, true
}

// activeOn sums the open sessions of open on the ports first to last of
// a stream that listens on address listen.
func activeOn(open openSockets, first, last int, listen netip.Addr) int {
	n := 0
	if last-first+1 > len(open) {
		for port := range open {
			if port >= first && port <= last {
				n += open.on(port, listen)
			}
		}
		return n
	}
	for port := first; port <= last; port++ {
		n += open.on(port, listen)
	}
	return n
}
