package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// latency measures create→ready: from the request to the first echo
// through the new port, and delete→refused: from the request to the
// first refused connect, each isolated (the node idle in between) and
// back-to-back. A create's reply is early when the first connection after
// it gets no echo; a delete's when a connect right after its reply is
// not refused.
func (b *bench) latency(n, preload int) (map[string]any, error) {
	if b.hi-b.lo+1 < n+preload {
		return nil, fmt.Errorf("-ports has fewer than %d ports", n+preload)
	}
	if err := b.importStreams(b.hi-preload+1, preload); err != nil {
		return nil, err
	}
	var replies []time.Duration
	iso, err := b.latencyRound(n, 300*time.Millisecond, &replies)
	if err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond)
	b2b, err := b.latencyRound(n, 0, &replies)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"samples": n, "streams_present": preload, "isolated_p50_ms": ms(pct(iso.creates, 50)), "isolated_p95_ms": ms(pct(iso.creates, 95)),
		"back_to_back_p50_ms": ms(pct(b2b.creates, 50)), "back_to_back_p95_ms": ms(pct(b2b.creates, 95)),
		"replies_before_ready": iso.early + b2b.early, "reply_p50_ms": ms(pct(replies, 50)),
		"delete_refused_isolated_p50_ms": ms(pct(iso.deletes, 50)), "delete_refused_isolated_p95_ms": ms(pct(iso.deletes, 95)),
		"delete_refused_back_to_back_p50_ms": ms(pct(b2b.deletes, 50)), "delete_refused_back_to_back_p95_ms": ms(pct(b2b.deletes, 95)),
		"deletes_not_refused_at_reply": iso.notRefused + b2b.notRefused,
	}, nil
}

// roundTimes are one latency round's create→ready and delete→refused
// times and its early replies.
type roundTimes struct {
	creates, deletes  []time.Duration
	early, notRefused int
}

// latencyRound is one round of latency: n creates on the first n ports,
// each timed until its port echoes, then n deletes, each timed until its
// port refuses, gap after each. Each create's reply time joins replies.
func (b *bench) latencyRound(n int, gap time.Duration, replies *[]time.Duration) (roundTimes, error) {
	var r roundTimes
	for i := 0; i < n; i++ {
		port := b.lo + i
		start := time.Now()
		if _, err := b.put(port, ""); err != nil {
			return r, err
		}
		*replies = append(*replies, time.Since(start))
		if !echoOnce(port) {
			r.early++
		}
		ready, ok := waitEcho(port)
		if !ok {
			return r, fmt.Errorf("port %d never forwarded", port)
		}
		r.creates = append(r.creates, ready.Sub(start))
		time.Sleep(gap)
	}
	for i := 0; i < n; i++ {
		port := b.lo + i
		start := time.Now()
		if code, raw, err := b.do("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", port), ""); err != nil || code != 204 {
			return r, fmt.Errorf("DELETE: %d %s %v", code, raw, err)
		}
		if !refused(port) {
			r.notRefused++
		}
		gone, ok := waitRefused(port)
		if !ok {
			return r, fmt.Errorf("port %d still accepts 10 s after its delete", port)
		}
		r.deletes = append(r.deletes, gone.Sub(start))
		time.Sleep(gap)
	}
	return r, nil
}

// waitRefused polls until a connect to port is refused; the poll interval
// is 1 ms, and it gives up after 10 s.
func waitRefused(port int) (time.Time, bool) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if refused(port) {
			return time.Now(), true
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, false
}

// bulk creates n streams from c concurrent clients, each waiting for its
// reply and then trying one connection through the port (early: no
// echo). Once every client is done, every stream acknowledged must
// forward: one that does not echo within 2 s then is lost.
func (b *bench) bulk(n, c int) (map[string]any, error) {
	if b.hi-b.lo+1 < n {
		n = b.hi - b.lo + 1
	}
	before, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var replies []time.Duration
	var acked []int
	var early, failed int
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				port := b.lo + i
				t0 := time.Now()
				_, err := b.put(port, "")
				d := time.Since(t0)
				ok := err == nil && echoOnce(port)
				mu.Lock()
				replies = append(replies, d)
				if err != nil {
					failed++
				} else {
					acked = append(acked, port)
				}
				if err == nil && !ok {
					early++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	after, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"streams": n, "clients": c, "seconds": wall.Seconds(), "streams_per_s": float64(n) / wall.Seconds(),
		"reply_p50_ms": ms(pct(replies, 50)), "reply_p95_ms": ms(pct(replies, 95)),
		"replies_before_ready": early, "failed": failed, "lost": lost(acked, c),
		"reloads": after["nginx_reloads"] - before["nginx_reloads"], "passes": after["passes"] - before["passes"],
	}, nil
}

// lost counts the ports of ports that give no echo within 2 s, checked
// from c goroutines at once.
func lost(ports []int, c int) int {
	var n atomic.Int64
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(ports); i = int(next.Add(1)) - 1 {
				if !echoWithin(ports[i], 2*time.Second) {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(n.Load())
}

// echoWithin polls a round trip through port every 10 ms until one works
// (true) or d passes (false).
func echoWithin(port int, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if echoBy(port, deadline) {
			return true
		}
	}
	return false
}

// list measures GET /v1/streams with n streams present.
func (b *bench) list(n int, d time.Duration, conns int) (map[string]any, error) {
	if b.hi-b.lo+1 < n {
		return nil, fmt.Errorf("-ports has fewer than %d ports", n)
	}
	if err := b.importStreams(b.lo, n); err != nil {
		return nil, err
	}
	var total, errs atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				code, _, err := b.do("GET", "/v1/streams", "")
				if err != nil || code != 200 {
					errs.Add(1)
					continue
				}
				total.Add(1)
			}
		}()
	}
	wg.Wait()
	return map[string]any{"streams": n, "connections": conns, "seconds": d.Seconds(),
		"requests_per_s": float64(total.Load()) / d.Seconds(), "errors": errs.Load()}, nil
}

// reloadImpact keeps connections busy through one stream while another
// stream changes, forcing a reload each time, and counts what broke.
func (b *bench) reloadImpact(n int) (map[string]any, error) {
	carrier, churn := b.lo, b.lo+1
	if _, err := b.put(carrier, ""); err != nil {
		return nil, err
	}
	if _, err := b.put(churn, ""); err != nil {
		return nil, err
	}
	before, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	const conns = 8
	carriers := make([]int, conns)
	for i := range carriers {
		carriers[i] = carrier
	}
	t := startTraffic(carriers, []int{carrier})
	for i := 0; i < n; i++ {
		if _, err := b.put(churn, fmt.Sprintf(`,"connect_timeout":"%ds"`, 5+i%2)); err != nil {
			t.stop()
			return nil, err
		}
	}
	res := t.stop()
	after, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	res["reloads"] = after["nginx_reloads"] - before["nginx_reloads"]
	return res, nil
}

// datapath compares throughput and round trip through a stream of the
// daemon with the same through stock nginx and with no proxy at all.
func (b *bench) datapath(bin string, rawBase int) (map[string]any, error) {
	if _, err := b.put(b.lo, ""); err != nil {
		return nil, err
	}
	ours, ourRTT, err := dataPath(b.lo)
	if err != nil {
		return nil, err
	}
	raw, err := startRawNginx(bin, 1, rawBase, b.backend)
	if err != nil {
		return nil, err
	}
	defer raw.stop()
	if _, ok := waitEcho(rawBase); !ok {
		return nil, fmt.Errorf("raw nginx does not forward")
	}
	stock, stockRTT, err := dataPath(rawBase)
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(b.backend)
	p, _ := strconv.Atoi(port)
	direct, directRTT, err := dataPath(p)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ours_gbit_s": ours, "ours_rtt_us": float64(ourRTT.Microseconds()),
		"stock_nginx_gbit_s": stock, "stock_nginx_rtt_us": float64(stockRTT.Microseconds()),
		"direct_gbit_s": direct, "direct_rtt_us": float64(directRTT.Microseconds())}, nil
}

// rss reads the daemon's resident memory from /proc (same host only)
// with preload streams present, imported at once.
func (b *bench) rss(preload int) (map[string]any, error) {
	if b.hi-b.lo+1 < preload {
		return nil, fmt.Errorf("-ports has fewer than %d ports", preload)
	}
	if err := b.importStreams(b.lo, preload); err != nil {
		return nil, err
	}
	_, pid, err := b.counters()
	if err != nil {
		return nil, err
	}
	kb, err := statusKB(pid, "status", "VmRSS:")
	if err != nil {
		return nil, fmt.Errorf("read the daemon's /proc status (is it on this host?): %w", err)
	}
	_, raw, err := b.do("GET", "/v1/streams", "")
	if err != nil {
		return nil, err
	}
	var l struct {
		Streams []json.RawMessage `json:"streams"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, err
	}
	return map[string]any{"pid": pid, "rss_mb": float64(kb) / 1024, "streams": len(l.Streams)}, nil
}
