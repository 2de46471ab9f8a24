package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// measure runs, in order: the raw-nginx floor; write → applied, a sample
// on the single node then one on the fleet, alternately; the single node's
// create→ready as the default scbench run measures it; 1,000 creates on
// the single node, then spread over the fleet's nodes, each followed by
// the memory of every daemon and nginx at 1,000 streams.
func (f *fleet) measure(out *bench) error {
	add := func(name string, res map[string]any) {
		res["measurement"] = name
		out.results = append(out.results, res)
		line, _ := json.Marshal(res) // progress, kept if a later step fails
		fmt.Fprintln(os.Stderr, string(line))
	}
	for _, n := range f.cfg.rawStreams {
		res, err := rawReloadToEcho(f.cfg.nginxBin, n, f.cfg.rawBase, f.cfg.samples, f.cfg.backend)
		if err != nil {
			return fmt.Errorf("raw: %w", err)
		}
		add("raw", res)
	}
	res, err := f.applied(f.cfg.samples)
	if err != nil {
		return fmt.Errorf("applied: %w", err)
	}
	add("applied", res)
	if err := f.clean(f.cfg.samples); err != nil {
		return err
	}
	// The single node's create→ready as BENCHMARKS.md has measured it so
	// far (the reply, then a round trip), for continuity.
	if res, err = f.single.b.latency(f.cfg.samples, 0); err != nil {
		return fmt.Errorf("latency on the single node: %w", err)
	}
	add("latency_single", res)

	if res, err = f.single.b.bulk(f.cfg.bulkN, f.cfg.bulkC); err != nil {
		return fmt.Errorf("bulk on the single node: %w", err)
	}
	add("bulk_single", res)
	if res, err = memory(f.single); err != nil {
		return err
	}
	add("rss_single", res)
	if err := f.single.b.clean(); err != nil {
		return err
	}

	if res, err = f.bulk(f.cfg.bulkN, f.cfg.bulkC); err != nil {
		return fmt.Errorf("bulk on the fleet: %w", err)
	}
	add("bulk_fleet", res)
	for _, n := range f.nodes {
		if res, err = memory(n); err != nil {
			return err
		}
		add("rss_"+n.name, res)
	}
	var etcdMB []string
	for _, p := range f.etcd {
		rss, _ := readMemory(p.cmd.Process.Pid)
		etcdMB = append(etcdMB, strconv.FormatFloat(rss, 'f', 1, 64))
	}
	add("rss_etcd", map[string]any{"members_rss_mb": strings.Join(etcdMB, "/")})
	return f.clean(f.cfg.bulkN)
}

// applied measures write → applied: from the PUT until a round trip
// through the new port works, at the single node's address, and at each
// fleet node's address after a PUT on the first node, observed from
// outside by pollers started with the request.
func (f *fleet) applied(samples int) (map[string]any, error) {
	var single, singleReply, all, first, fleetReply []time.Duration
	var singleEarly, fleetEarly, firstEarly int
	for i := 0; i < samples; i++ {
		port := f.cfg.lo + i
		ds, reply, err := timeApplied(f.single.b, port, []string{f.single.addr})
		if err != nil {
			return nil, fmt.Errorf("single node: %w", err)
		}
		single, singleReply = append(single, ds[0]), append(singleReply, reply)
		if reply < ds[0] {
			singleEarly++
		}
		time.Sleep(300 * time.Millisecond)
		if ds, reply, err = timeApplied(f.nodes[0].b, port, fleetAddrs); err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		all, first, fleetReply = append(all, slices.Max(ds)), append(first, slices.Min(ds)), append(fleetReply, reply)
		if reply < slices.Max(ds) {
			fleetEarly++
		}
		if reply < ds[0] {
			firstEarly++
		}
		time.Sleep(300 * time.Millisecond)
	}
	return map[string]any{
		"samples": samples, "single_p50_ms": ms(pct(single, 50)), "single_p95_ms": ms(pct(single, 95)),
		"single_reply_p50_ms": ms(pct(singleReply, 50)), "single_replies_before_first_echo": singleEarly,
		"fleet_all_p50_ms": ms(pct(all, 50)), "fleet_all_p95_ms": ms(pct(all, 95)),
		"fleet_first_node_p50_ms": ms(pct(first, 50)), "fleet_reply_p50_ms": ms(pct(fleetReply, 50)),
		"fleet_reply_p95_ms":               ms(pct(fleetReply, 95)),
		"fleet_replies_before_echo_at_all": fleetEarly, "fleet_replies_before_echo_at_node_a": firstEarly,
		"ratio_p50": float64(pct(all, 50)) / float64(pct(single, 50)),
		"ratio_p95": float64(pct(all, 95)) / float64(pct(single, 95)),
	}, nil
}

// timeApplied PUTs port on b and, from the moment the request is sent,
// polls a round trip through port at each address (at most 10s); it
// returns how long each address took to forward, and the reply.
func timeApplied(b *bench, port int, addrs []string) ([]time.Duration, time.Duration, error) {
	start := time.Now()
	ds := make([]time.Duration, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, ok := waitEchoAt(a, port, start.Add(10*time.Second))
			if !ok {
				errs[i] = fmt.Errorf("%s:%d did not forward within 10s", a, port)
			}
			ds[i] = at.Sub(start)
		}()
	}
	_, err := b.put(port, "")
	reply := time.Since(start)
	wg.Wait()
	if err := errors.Join(append(errs, err)...); err != nil {
		return nil, 0, err
	}
	return ds, reply, nil
}

// bulk creates n streams from c concurrent clients, client k writing
// through node k mod 3, then waits (at most 2 minutes after the last
// reply) until every port forwards at every node.
func (f *fleet) bulk(n, c int) (map[string]any, error) {
	before, err := f.reloads()
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var replies []time.Duration
	var early, failed int
	var firstErr error
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for k := range c {
		nd := f.nodes[k%len(f.nodes)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				port := f.cfg.lo + i
				t0 := time.Now()
				_, err := nd.b.put(port, "")
				d := time.Since(t0)
				ok := err == nil && echoAt(nd.addr, port)
				mu.Lock()
				replies = append(replies, d)
				if err != nil {
					failed++
					firstErr = firstOf(firstErr, err)
				} else if !ok {
					early++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	everywhere, err := f.allForward(n, time.Now().Add(2*time.Minute))
	if err != nil {
		return nil, err
	}
	after, err := f.reloads()
	if err != nil {
		return nil, err
	}
	var reloads []string
	for i := range after {
		reloads = append(reloads, strconv.Itoa(int(after[i]-before[i])))
	}
	res := map[string]any{
		"streams": n, "clients": c, "nodes": len(f.nodes), "seconds": wall.Seconds(), "streams_per_s": float64(n) / wall.Seconds(),
		"reply_p50_ms": ms(pct(replies, 50)), "reply_p95_ms": ms(pct(replies, 95)),
		"replies_before_ready_at_that_node": early, "failed": failed,
		"all_nodes_forward_all_s": everywhere.Sub(start).Seconds(), "reloads_per_node": strings.Join(reloads, "/"),
	}
	if firstErr != nil {
		res["first_error"] = firstErr.Error()
	}
	return res, nil
}

// firstOf keeps the first error.
func firstOf(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// allForward waits until ports lo..lo+n-1 forward at every fleet node, or
// the deadline passes, and returns when the last one did.
func (f *fleet) allForward(n int, deadline time.Time) (time.Time, error) {
	ends := make([]time.Time, len(f.nodes))
	errs := make([]error, len(f.nodes))
	var wg sync.WaitGroup
	for i, nd := range f.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := f.cfg.lo; p < f.cfg.lo+n; p++ {
				if _, ok := waitEchoAt(nd.addr, p, deadline); !ok {
					errs[i] = fmt.Errorf("%s:%d does not forward by the deadline", nd.addr, p)
					return
				}
			}
			ends[i] = time.Now()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return time.Time{}, err
	}
	return slices.MaxFunc(ends, func(a, b time.Time) int { return a.Compare(b) }), nil
}

// reloads is each fleet node's nginx reload counter.
func (f *fleet) reloads() ([]float64, error) {
	var out []float64
	for _, nd := range f.nodes {
		c, _, err := nd.b.counters()
		if err != nil {
			return nil, err
		}
		out = append(out, c["nginx_reloads"])
	}
	return out, nil
}

// clean removes the streams on the tool's ports (on the fleet through its
// first node) and waits (at most 30s) until the first n ports refuse
// connections at every address.
func (f *fleet) clean(n int) error {
	if err := f.single.b.clean(); err != nil {
		return err
	}
	if err := f.nodes[0].b.clean(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range append([]string{singleAddr}, fleetAddrs...) {
		for p := f.cfg.lo; p < f.cfg.lo+n; p++ {
			for dialable(a, p) {
				if time.Now().After(deadline) {
					return fmt.Errorf("%s:%d still accepts connections 30s after its stream was deleted", a, p)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	return nil
}

func dialable(addr string, port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// echoAt reports whether a round trip through addr:port works now (within
// a second).
func echoAt(addr string, port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return false
	}
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	return err == nil && string(buf) == "ping\n"
}

// waitEchoAt polls a round trip through addr:port every millisecond (each
// attempt may take a second) until one works or the deadline passes. A
// connection made once nginx's master listens but before its new workers
// accept waits in the kernel's backlog and counts when it is served.
func waitEchoAt(addr string, port int, deadline time.Time) (time.Time, bool) {
	for time.Now().Before(deadline) {
		if echoAt(addr, port) {
			return time.Now(), true
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, false
}

// memory is a node's resident memory: the daemon's, and that of every
// nginx master of its pool and their workers (RSS counts the pages workers share with the master in
// each of them; PSS divides shared pages among the processes sharing
// them, so its sum is what the node's nginx really holds).
func memory(n *node) (map[string]any, error) {
	_, raw, err := n.b.do("GET", "/v1/streams", "")
	if err != nil {
		return nil, err
	}
	var l struct {
		Streams []json.RawMessage `json:"streams"`
	}
	json.Unmarshal(raw, &l)
	daemon, _ := readMemory(n.p.cmd.Process.Pid)
	masters := nginxMasters(n.dataDir)
	if len(masters) == 0 {
		return nil, fmt.Errorf("%s: no nginx master found", n.name)
	}
	var mRSS, mPSS, wRSS, wPSS float64
	workers := 0
	for _, m := range masters {
		r, p := readMemory(m)
		mRSS, mPSS = mRSS+r, mPSS+p
		for _, w := range children(m) {
			r, p := readMemory(w)
			wRSS, wPSS, workers = wRSS+r, wPSS+p, workers+1
		}
	}
	return map[string]any{"streams": len(l.Streams), "daemon_rss_mb": daemon, "nginx_masters": len(masters),
		"nginx_master_rss_mb": mRSS, "nginx_workers": workers, "nginx_workers_rss_mb": wRSS,
		"nginx_pss_mb": mPSS + wPSS}, nil
}

// readMemory is a process's RSS and PSS in MB (0 when unreadable).
func readMemory(pid int) (rss, pss float64) {
	field := func(file, name string) float64 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + file)
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, name+":"); ok {
				kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
				return float64(kb) / 1024
			}
		}
		return 0
	}
	return field("status", "VmRSS"), field("smaps_rollup", "Pss")
}

// children are the PIDs whose parent is pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The fields after the command (which may hold spaces) in parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if f := strings.Fields(string(b[i+1:])); i > 0 && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, c)
		}
	}
	return out
}
