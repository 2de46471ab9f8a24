package store

import (
	"bytes"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// checkPorts returns a *desired.PortConflictError when sp, replacing cur
// (nil: a create), would listen on a port another stream has, as the
// transaction sees them (writes batched before it included). A stream
// that keeps its ports is not checked again, nor a single port while no
// range was ever stored: its own key is then its only conflict.
func (s *Store) checkPorts(tx *bolt.Tx, sp stream.Spec, cur *stream.Spec) error {
	if cur != nil && cur.LastPort() >= sp.LastPort() {
		return nil
	}
	if !sp.IsRange() && !s.hasRanges.Load() {
		return nil
	}
	o, err := overlapping(tx, sp)
	if err != nil || o == nil {
		return err
	}
	return desired.Overlap(sp, *o)
}

// listenEndField marks the stored JSON of a range (listen_end is omitted
// for one port): a stream below sp's first port can reach it only then.
var listenEndField = []byte(`"listen_end"`)

// overlapping returns the first stream other than sp's id whose ports
// meet sp's, or nil. A range has at most stream.MaxRangePorts ports, so
// only the keys of the ports from that far below sp's first port up to
// its last are read: one lookup each, decoding only ranges and streams
// inside sp's ports.
func overlapping(tx *bolt.Tx, sp stream.Spec) (*stream.Spec, error) {
	b := tx.Bucket(bucketStreams)
	for q := max(1, sp.Listen-stream.MaxRangePorts+1); q <= sp.LastPort(); q++ {
		if q == sp.Listen {
			continue
		}
		id := stream.ID{Protocol: sp.Protocol, Port: q}
		v := b.Get([]byte(id.String()))
		if v == nil || (q < sp.Listen && !bytes.Contains(v, listenEndField)) {
			continue
		}
		var o stream.Spec
		if err := json.Unmarshal(v, &o); err != nil {
			return nil, fmt.Errorf("decode stream %q: %w", id, err)
		}
		if o.LastPort() >= sp.Listen {
			return &o, nil
		}
	}
	return nil, nil
}
