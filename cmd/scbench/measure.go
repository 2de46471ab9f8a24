package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// latency measures create→ready: from the request to the first echo
// through the new port, isolated (the node idle in between) and
// back-to-back.
func (b *bench) latency(n, preload int) (map[string]any, error) {
	if b.hi-b.lo+1 < n+preload {
		return nil, fmt.Errorf("-ports has fewer than %d ports", n+preload)
	}
	if err := b.importStreams(b.hi-preload+1, preload); err != nil {
		return nil, err
	}
	var replies []time.Duration
	measure := func(gap time.Duration) ([]time.Duration, int, error) {
		var ds []time.Duration
		early := 0
		for i := 0; i < n; i++ {
			port := b.lo + i
			start := time.Now()
			if _, err := b.put(port, ""); err != nil {
				return nil, 0, err
			}
			replies = append(replies, time.Since(start))
			if !echoOnce(port) {
				early++
			}
			ready, ok := waitEcho(port)
			if !ok {
				return nil, 0, fmt.Errorf("port %d never forwarded", port)
			}
			ds = append(ds, ready.Sub(start))
			time.Sleep(gap)
		}
		for i := 0; i < n; i++ {
			if code, raw, err := b.do("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", b.lo+i), ""); err != nil || code != 204 {
				return nil, 0, fmt.Errorf("DELETE: %d %s %v", code, raw, err)
			}
		}
		return ds, early, nil
	}
	iso, early1, err := measure(300 * time.Millisecond)
	if err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond)
	b2b, early2, err := measure(0)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"samples": n, "streams_present": preload, "isolated_p50_ms": ms(pct(iso, 50)), "isolated_p95_ms": ms(pct(iso, 95)),
		"back_to_back_p50_ms": ms(pct(b2b, 50)), "back_to_back_p95_ms": ms(pct(b2b, 95)),
		"replies_before_ready": early1 + early2, "reply_p50_ms": ms(pct(replies, 50)),
	}, nil
}

// bulk creates n streams from c concurrent clients.
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
				} else if !ok {
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
		"replies_before_ready": early, "failed": failed,
		"reloads": after["nginx_reloads"] - before["nginx_reloads"], "passes": after["passes"] - before["passes"],
	}, nil
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
	var roundTrips, dropped, newFailed atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(carrier))
			if err != nil {
				dropped.Add(1)
				return
			}
			defer c.Close()
			buf := make([]byte, 5)
			for {
				select {
				case <-done:
					return
				default:
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write([]byte("ping\n")); err != nil {
					dropped.Add(1)
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					dropped.Add(1)
					return
				}
				roundTrips.Add(1)
			}
		}()
	}
	// New connections during the reloads must work too.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if !echoOnce(carrier) {
				newFailed.Add(1)
			}
		}
	}()
	for i := 0; i < n; i++ {
		if _, err := b.put(churn, fmt.Sprintf(`,"connect_timeout":"%ds"`, 5+i%2)); err != nil {
			close(done)
			wg.Wait()
			return nil, err
		}
	}
	close(done)
	wg.Wait()
	after, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	return map[string]any{"reloads": after["nginx_reloads"] - before["nginx_reloads"], "connections": conns,
		"round_trips": roundTrips.Load(), "connections_dropped": dropped.Load(), "new_connections_failed": newFailed.Load()}, nil
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

// rss reads the daemon's resident memory from /proc (same host only).
func (b *bench) rss() (map[string]any, error) {
	_, pid, err := b.counters()
	if err != nil {
		return nil, err
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, fmt.Errorf("read the daemon's /proc status (is it on this host?): %w", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			_, raw, _ := b.do("GET", "/v1/streams", "")
			var l struct {
				Streams []any `json:"streams"`
			}
			json.Unmarshal(raw, &l)
			return map[string]any{"pid": pid, "rss_mb": float64(kb) / 1024, "streams": len(l.Streams)}, nil
		}
	}
	return nil, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
