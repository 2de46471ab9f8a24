package main

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// pollEvery is how often expiry and bans try each port or source while
// they wait for a change: the resolution of their times.
const pollEvery = 20 * time.Millisecond

// expiry measures streams that expire at one moment: n streams with the
// same expires_at, created by one import, each checked to forward; then,
// from the deadline, the time until each port refuses a connect, and the
// reloads the expiry cost. As the floor of what the write path costs, the
// same n streams are then deleted by the client, by one import with
// prune and by n DELETEs from 16 clients, each timed from the request.
func (b *bench) expiry(n int) (map[string]any, error) {
	if b.hi-b.lo+1 < n {
		return nil, fmt.Errorf("-ports has fewer than %d ports", n)
	}
	ports := make([]int, n)
	for i := range ports {
		ports[i] = b.lo + i
	}
	lead := 3*time.Second + time.Duration(n)*10*time.Millisecond
	deadline := time.Now().Add(lead).UTC().Truncate(time.Millisecond)
	if err := b.importSpecs(ports, map[string]any{"expires_at": deadline.Format(time.RFC3339Nano)}); err != nil {
		return nil, err
	}
	if k := lost(ports, 16); k > 0 {
		return nil, fmt.Errorf("%d of %d expiring streams do not forward", k, n)
	}
	margin := time.Until(deadline)
	if margin < 200*time.Millisecond {
		return nil, fmt.Errorf("the streams were checked only %v before their deadline", margin)
	}
	res := map[string]any{"streams": n, "created_by": "one import", "poll_ms": ms(pollEvery),
		"lead_ms": ms(lead), "checked_before_deadline_ms": ms(margin)}
	expired, err := b.timeRefusals(ports, deadline, deadline.Add(-100*time.Millisecond), nil)
	if err != nil {
		return nil, err
	}
	merge(res, "expiry_", expired)
	left, err := b.streamsOnPorts()
	if err != nil {
		return nil, err
	}
	res["expiry_left_listed"] = left
	for _, floor := range []struct {
		prefix string
		del    func() error
	}{
		{"prune_", b.clean},
		{"deletes_", func() error { return b.deleteAll(ports, 16) }},
	} {
		if err := b.importSpecs(ports, nil); err != nil {
			return nil, err
		}
		if k := lost(ports, 16); k > 0 {
			return nil, fmt.Errorf("%d of %d streams do not forward", k, n)
		}
		t0 := time.Now()
		got, err := b.timeRefusals(ports, t0, t0, floor.del)
		if err != nil {
			return nil, err
		}
		merge(res, floor.prefix, got)
	}
	return res, nil
}

// merge copies src into dst, each key prefixed.
func merge(dst map[string]any, prefix string, src map[string]any) {
	for k, v := range src {
		dst[prefix+k] = v
	}
}

// timeRefusals polls each of ports from start on until a connect to it is
// refused (30 s at most), while act (if any) runs, and reports the times
// from origin to each port's first refusal, the reply time of act, how many
// ports refused before origin or never, and the reloads meanwhile.
func (b *bench) timeRefusals(ports []int, origin, start time.Time, act func() error) (map[string]any, error) {
	before, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	giveUp := origin.Add(30 * time.Second)
	at := make([]time.Time, len(ports))
	var wg sync.WaitGroup
	for i, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(start))
			for time.Now().Before(giveUp) {
				if refused(p) {
					at[i] = time.Now()
					return
				}
				time.Sleep(pollEvery)
			}
		}()
	}
	var reply time.Duration
	if act != nil {
		t0 := time.Now()
		err = act()
		reply = time.Since(t0)
	}
	wg.Wait()
	if err != nil {
		return nil, err
	}
	after, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	ds, early, never := sinceOrigin(at, origin)
	res := durationStats(ds)
	res["refused_before_origin"], res["never_refused"] = early, never
	if act != nil {
		res["reply_ms"] = ms(reply)
	}
	res["reloads"] = after["nginx_reloads"] - before["nginx_reloads"]
	return res, nil
}

// sinceOrigin turns the times of at into durations from origin; a zero
// time (never) is left out and counted, and so is a time before origin
// (kept, negative).
func sinceOrigin(at []time.Time, origin time.Time) (ds []time.Duration, early, never int) {
	for _, t := range at {
		switch {
		case t.IsZero():
			never++
			continue
		case t.Before(origin):
			early++
		}
		ds = append(ds, t.Sub(origin))
	}
	return ds, early, never
}

// durationStats is p50, p95 and max of ds, in milliseconds; max is the
// last one.
func durationStats(ds []time.Duration) map[string]any {
	var top time.Duration
	for _, d := range ds {
		top = max(top, d)
	}
	return map[string]any{"p50_ms": ms(pct(ds, 50)), "p95_ms": ms(pct(ds, 95)), "max_ms": ms(top)}
}

// importSpecs creates a stream to the echo backend on each of ports, each
// with the fields extra, in one import.
func (b *bench) importSpecs(ports []int, extra map[string]any) error {
	streams := make([]map[string]any, len(ports))
	for i, p := range ports {
		s := map[string]any{"protocol": "tcp", "listen": p, "backend": b.backend}
		for k, v := range extra {
			s[k] = v
		}
		streams[i] = s
	}
	body, _ := json.Marshal(map[string]any{"streams": streams})
	if code, raw, err := b.do("POST", "/v1/import", string(body)); err != nil || code != 200 {
		return fmt.Errorf("import %d streams: %d %s %v", len(ports), code, raw, err)
	}
	return nil
}

// deleteAll deletes the stream of each of ports, from c clients at once.
func (b *bench) deleteAll(ports []int, c int) error {
	jobs := make(chan int)
	errs := make(chan error, len(ports))
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				code, raw, err := b.do("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", p), "")
				if err == nil && code != 204 {
					err = fmt.Errorf("DELETE %d: %d %s", p, code, raw)
				}
				errs <- err
			}
		}()
	}
	for _, p := range ports {
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// streamsOnPorts counts the streams of the desired state on the tool's
// ports.
func (b *bench) streamsOnPorts() (int, error) {
	_, raw, err := b.do("GET", "/v1/export", "")
	if err != nil {
		return 0, err
	}
	var doc struct {
		Streams []struct {
			Listen int `json:"listen"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return 0, err
	}
	n := 0
	for _, s := range doc.Streams {
		if s.Listen >= b.lo && s.Listen <= b.hi {
			n++
		}
	}
	return n, nil
}
