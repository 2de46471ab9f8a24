package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// traffic is what the data plane carries while the daemon changes other
// streams: long connections echoing without pause (one per carrier port
// given) and new connections opened one after another, in turn, to the
// probe ports. Nothing it uses may change meanwhile.
type traffic struct {
	roundTrips, dropped        atomic.Int64
	newOK, newRefused, newFail atomic.Int64
	done                       chan struct{}
	wg                         sync.WaitGroup
}

// trafficDeadline bounds one round trip: a round trip slower than this
// counts as a dropped (long) or failed (new) connection.
const trafficDeadline = 5 * time.Second

// startTraffic opens one long connection to each of carriers and starts
// the new-connection loop over probes.
func startTraffic(carriers, probes []int) *traffic {
	t := &traffic{done: make(chan struct{})}
	for i, port := range carriers {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.carry(uint32(i), port)
		}()
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-t.done:
				return
			default:
			}
			switch ok, refusedNow := probe(probes[i%len(probes)]); {
			case ok:
				t.newOK.Add(1)
			case refusedNow:
				t.newRefused.Add(1)
			default:
				t.newFail.Add(1)
			}
		}
	}()
	return t
}

// carry echoes numbered messages through one connection to port until
// the traffic stops. The connection counts as dropped if it cannot be
// opened, breaks, stalls past trafficDeadline or echoes other bytes than
// it was sent.
func (t *traffic) carry(id uint32, port int) {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), trafficDeadline)
	if err != nil {
		t.dropped.Add(1)
		return
	}
	defer c.Close()
	msg, got := make([]byte, 8), make([]byte, 8)
	binary.BigEndian.PutUint32(msg, id)
	for seq := uint32(0); ; seq++ {
		select {
		case <-t.done:
			return
		default:
		}
		binary.BigEndian.PutUint32(msg[4:], seq)
		c.SetDeadline(time.Now().Add(trafficDeadline))
		if _, err := c.Write(msg); err != nil {
			t.dropped.Add(1)
			return
		}
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.dropped.Add(1)
			return
		}
		t.roundTrips.Add(1)
	}
}

// stop ends the traffic and returns its counts.
func (t *traffic) stop() map[string]any {
	close(t.done)
	t.wg.Wait()
	ok, refusedN, failed := t.newOK.Load(), t.newRefused.Load(), t.newFail.Load()
	return map[string]any{"round_trips": t.roundTrips.Load(), "connections_dropped": t.dropped.Load(),
		"new_connections": ok + refusedN + failed, "new_connections_refused": refusedN,
		"new_connections_failed": refusedN + failed}
}

// probe opens one new connection to port and reports whether it echoed,
// or else whether the connect was refused.
func probe(port int) (ok, refusedNow bool) {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), trafficDeadline)
	if err != nil {
		return false, errors.Is(err, syscall.ECONNREFUSED)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(trafficDeadline))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return false, false
	}
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	return err == nil && string(buf) == "ping\n", false
}

// spreadChange is one job of the spread measurement: an update of port,
// or (create) a new stream on port and then its delete, two changes.
type spreadChange struct {
	port   int
	create bool
}

// spread preloads streams (one import, which the daemon spreads over its
// shards), keeps 8 long connections echoing through 8 of them and opens
// new connections, in turn, to the others left unchanged, while clients
// make n changes spread over the pool: updates of other preloaded streams
// and creates each followed by its delete. It reports what broke and how
// many shards reloaded meanwhile.
func (b *bench) spread(preload, n, clients int) (map[string]any, error) {
	creates := n / 4
	if preload < 32 || n < 4 {
		return nil, fmt.Errorf("spread needs at least 32 streams and 4 changes")
	}
	if b.hi-b.lo+1 < preload+creates {
		return nil, fmt.Errorf("-ports has fewer than %d ports", preload+creates)
	}
	// The daemon spreads an import over shards that are idle: let the
	// deletes of the measurement before settle first.
	if err := b.waitShardsEmpty(30 * time.Second); err != nil {
		return nil, err
	}
	if err := b.importStreams(b.lo, preload); err != nil {
		return nil, err
	}
	// Even ports stay unchanged; odd ones are updated.
	var carriers, probes []int
	for i := 0; i < preload; i += 2 {
		probes = append(probes, b.lo+i)
	}
	for i := range 8 {
		carriers = append(carriers, probes[i*len(probes)/8])
	}
	for _, p := range append(carriers, probes...) {
		if _, ok := waitEcho(p); !ok {
			return nil, fmt.Errorf("preloaded port %d never forwarded", p)
		}
	}
	byShard := b.placement()
	jobs := spreadJobs(updateOrder(b.lo, preload, byShard), b.lo+preload, n-2*creates, creates)
	before, err := b.shards()
	if err != nil {
		return nil, err
	}
	beforeC, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	t := startTraffic(carriers, probes)
	start := time.Now()
	err = b.runChanges(jobs, clients)
	wall := time.Since(start)
	res := t.stop()
	if err != nil {
		return nil, err
	}
	after, err := b.shards()
	if err != nil {
		return nil, err
	}
	afterC, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	res["streams_present"], res["changes"], res["clients"], res["seconds"] = preload, n, clients, wall.Seconds()
	res["connections"], res["probe_ports"] = len(carriers), len(probes)
	res["reloads"] = afterC["nginx_reloads"] - beforeC["nginx_reloads"]
	res["shards"], res["shards_touched"] = len(after), touched(before, after)
	res["placement_read"] = len(byShard) > 0
	if len(after) > 0 {
		res["shard_streams_min"], res["shard_streams_max"] = shardSpread(after)
	}
	return res, nil
}

// waitShardsEmpty polls /v1/status until no shard of the pool holds a
// stream (at once with one master, which lists no shards), for at most d.
func (b *bench) waitShardsEmpty(d time.Duration) error {
	for deadline := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		shards, err := b.shards()
		if err != nil {
			return err
		}
		held := 0
		for _, s := range shards {
			held += s.Streams
		}
		if held == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the pool's shards still hold %d streams %s after clean-up", held, d)
		}
	}
}

// spreadJobs interleaves updates of updatePorts, in their order (taken
// again from the start if there are more updates), with creates of new
// ports from firstNew on, evenly spaced among the updates.
func spreadJobs(updatePorts []int, firstNew, updates, creates int) []spreadChange {
	total := updates + creates
	jobs := make([]spreadChange, 0, total)
	for i, u, c := 0, 0, 0; i < total; i++ {
		if c < creates && (u >= updates || (c+1)*total <= (i+1)*creates) {
			jobs = append(jobs, spreadChange{port: firstNew + c, create: true})
			c++
			continue
		}
		jobs = append(jobs, spreadChange{port: updatePorts[u%len(updatePorts)]})
		u++
	}
	return jobs
}

// updateOrder lists the odd preloaded ports (those the spread measurement
// may change) so that consecutive updates fall on different shards: one
// of each shard in turn when byShard (shard → its ports) is known, else
// every odd port in order of a stride that spans them.
func updateOrder(lo, preload int, byShard map[int][]int) []int {
	changeable := func(p int) bool { return p >= lo && p < lo+preload && (p-lo)%2 == 1 }
	var lists [][]int
	for _, k := range slices.Sorted(maps.Keys(byShard)) {
		var l []int
		for _, p := range byShard[k] {
			if changeable(p) {
				l = append(l, p)
			}
		}
		if len(l) > 0 {
			lists = append(lists, l)
		}
	}
	var out []int
	if len(lists) > 1 {
		longest := 0
		for _, l := range lists {
			longest = max(longest, len(l))
		}
		for i := range longest {
			for _, l := range lists {
				if i < len(l) {
					out = append(out, l[i])
				}
			}
		}
		return out
	}
	odd := preload / 2
	const stride = 37 // prime: visits every odd port before repeating, unless odd is a multiple of it
	for i := 0; i < odd; i++ {
		out = append(out, lo+2*((i*stride)%odd)+1)
	}
	return out
}

// placement reads which shard holds which of the tool's ports from the
// daemon's stream files (same host only): STREAM_CONFIG_PATH/*.conf for
// shard 0, STREAM_CONFIG_PATH/shard-k/*.conf for shard k. Empty when they
// cannot be read.
func (b *bench) placement() map[int][]int {
	_, pid, err := b.counters()
	if err != nil {
		return nil
	}
	dir, err := envOf(pid, "STREAM_CONFIG_PATH")
	if err != nil {
		dd, err := envOf(pid, "DATA_DIR")
		if err != nil {
			return nil
		}
		dir = filepath.Join(dd, "stream.d")
	}
	prefix, err := envOf(pid, "STREAM_PREFIX")
	if err != nil {
		prefix = "stream-"
	}
	out := map[int][]int{}
	files, _ := filepath.Glob(filepath.Join(dir, prefix+"tcp-*.conf"))
	more, _ := filepath.Glob(filepath.Join(dir, "shard-*", prefix+"tcp-*.conf"))
	for _, f := range append(files, more...) {
		k := 0
		if sub := filepath.Base(filepath.Dir(f)); strings.HasPrefix(sub, "shard-") {
			if k, err = strconv.Atoi(strings.TrimPrefix(sub, "shard-")); err != nil {
				continue
			}
		}
		port, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), prefix+"tcp-"), ".conf"))
		if err == nil && port >= b.lo && port <= b.hi {
			out[k] = append(out[k], port)
		}
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out
}

// runChanges runs jobs from clients concurrent clients, each waiting for
// its reply; an update toggles the stream's connect_timeout.
func (b *bench) runChanges(jobs []spreadChange, clients int) error {
	next := atomic.Int64{}
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(jobs); i = int(next.Add(1)) - 1 {
				if err := b.change(jobs[i], i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// change makes one job's changes.
func (b *bench) change(j spreadChange, i int) error {
	if !j.create {
		_, err := b.put(j.port, fmt.Sprintf(`,"connect_timeout":"%ds"`, 5+i%2))
		return err
	}
	if _, err := b.put(j.port, ""); err != nil {
		return err
	}
	code, raw, err := b.do("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", j.port), "")
	if err == nil && code != 204 {
		err = fmt.Errorf("DELETE %d: %d %s", j.port, code, bytes.TrimSpace(raw))
	}
	return err
}

// touched counts the shards whose reloads grew from before to after.
func touched(before, after []shardStatus) int {
	was := map[int]float64{}
	for _, s := range before {
		was[s.Shard] = s.Reloads
	}
	n := 0
	for _, s := range after {
		if r, ok := was[s.Shard]; !ok || s.Reloads > r {
			n++
		}
	}
	return n
}
