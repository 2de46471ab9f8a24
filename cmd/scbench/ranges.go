package main

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// rangeVsSingles measures, in one run, create → ready of one stream that
// listens on a range of n ports against n single-port streams imported at
// once on the same ports: each reply means every port listens, which is
// checked right after it (a connect to each port; "refused" counts the
// ports that did not take it). Each is deleted again before the next.
func (b *bench) rangeVsSingles(n, samples int) (map[string]any, error) {
	if b.hi-b.lo+1 < n {
		return nil, fmt.Errorf("-ports has fewer than %d ports", n)
	}
	var ranged, singles []time.Duration
	refusedRange, refusedSingles := 0, 0
	path := fmt.Sprintf("/v1/streams/tcp/%d-%d", b.lo, b.lo+n-1)
	for range samples {
		t0 := time.Now()
		code, raw, err := b.do("PUT", path, `{"backend":"`+b.backend+`"}`)
		if err != nil || code != 201 {
			return nil, fmt.Errorf("PUT %s: %d %s %v", path, code, raw, err)
		}
		ranged = append(ranged, time.Since(t0))
		refusedRange += refusedOf(b.lo, n)
		if err := b.clean(); err != nil {
			return nil, err
		}
		t0 = time.Now()
		if err := b.importStreams(b.lo, n); err != nil {
			return nil, err
		}
		singles = append(singles, time.Since(t0))
		refusedSingles += refusedOf(b.lo, n)
		if err := b.clean(); err != nil {
			return nil, err
		}
	}
	r, s := pct(ranged, 50), pct(singles, 50)
	return map[string]any{
		"ports": n, "samples": samples,
		"range_ready_p50_ms": ms(r), "singles_ready_p50_ms": ms(s),
		"singles_over_range":        float64(s) / float64(max(r, time.Microsecond)),
		"refused_after_range_reply": refusedRange, "refused_after_singles_reply": refusedSingles,
	}, nil
}

// refusedOf counts the ports of first..first+n-1 that refuse a connect now.
func refusedOf(first, n int) int {
	refused := 0
	for p := first; p < first+n; p++ {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), time.Second)
		if err != nil {
			refused++
			continue
		}
		c.Close()
	}
	return refused
}
