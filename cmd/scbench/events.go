package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// eventsLoad measures what watching costs the daemon: the sequential
// creates and deletes of seq, first with no client on GET /v1/events, then
// with watchers clients reading every event and one client that never
// reads. It reports both rates, that every watcher received every event
// without a gap, and whether the stuck client was dropped.
func (b *bench) eventsLoad(n, watchers int) (map[string]any, error) {
	alone, err := b.seq(n)
	if err != nil {
		return nil, err
	}
	if err := b.clean(); err != nil {
		return nil, err
	}
	before, err := b.eventStats()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stuck, err := b.stuckWatcher()
	if err != nil {
		return nil, err
	}
	defer stuck.Close()
	ws := make([]*watcher, watchers)
	for i := range ws {
		if ws[i], err = b.watch(ctx); err != nil {
			return nil, err
		}
	}
	if err := b.waitSubscribers(before.Subscribers + watchers + 1); err != nil {
		return nil, err
	}
	watched, err := b.seq(n)
	if err != nil {
		return nil, err
	}
	after, err := b.eventStats()
	if err != nil {
		return nil, err
	}
	// Every event published meanwhile must reach every reader.
	want := after.LastID
	deadline := time.Now().Add(30 * time.Second)
	for _, w := range ws {
		for w.last() < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	cancel()
	var first uint64 // the first event every watcher was subscribed for
	gaps, behind := 0, 0
	for _, w := range ws {
		w.wait()
		first = max(first, w.firstID)
		gaps += w.gaps
		if w.lastID < want {
			behind++
		}
	}
	if behind > 0 {
		return nil, fmt.Errorf("%d of %d watchers did not get every event within 30 s", behind, watchers)
	}
	received := int(want - first + 1)
	return map[string]any{
		"streams": n, "watchers": watchers,
		"creates_per_s_alone": alone["creates_per_s"], "deletes_per_s_alone": alone["deletes_per_s"],
		"create_p50_ms_alone": alone["create_p50_ms"], "delete_p50_ms_alone": alone["delete_p50_ms"],
		"creates_per_s_watched": watched["creates_per_s"], "deletes_per_s_watched": watched["deletes_per_s"],
		"create_p50_ms_watched": watched["create_p50_ms"], "delete_p50_ms_watched": watched["delete_p50_ms"],
		"early_watched": watched["early"], "not_refused_watched": watched["not_refused"],
		"events_per_watcher": received, "gaps": gaps,
		"published":     after.Published - before.Published,
		"stuck_dropped": after.Dropped > before.Dropped,
	}, nil
}

// eventStats is /v1/status "events".
type eventStats struct {
	Subscribers int    `json:"subscribers"`
	Published   uint64 `json:"published"`
	Dropped     uint64 `json:"dropped_subscribers"`
	LastID      uint64 `json:"last_id"`
}

func (b *bench) eventStats() (eventStats, error) {
	code, raw, err := b.do("GET", "/v1/status", "")
	if err != nil || code != 200 {
		return eventStats{}, fmt.Errorf("GET /v1/status: %d %v", code, err)
	}
	var doc struct {
		Events *eventStats `json:"events"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Events == nil {
		return eventStats{}, fmt.Errorf("/v1/status has no events (%v): is the daemon older than GET /v1/events?", err)
	}
	return *doc.Events, nil
}

func (b *bench) waitSubscribers(n int) error {
	for range 500 {
		st, err := b.eventStats()
		if err != nil {
			return err
		}
		if st.Subscribers >= n {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("fewer than %d clients on /v1/events after 5 s", n)
}

// stuckWatcher opens GET /v1/events and never reads from it.
func (b *bench) stuckWatcher() (net.Conn, error) {
	u, err := url.Parse(b.api)
	if err != nil {
		return nil, err
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	c.(*net.TCPConn).SetReadBuffer(4096)
	auth := ""
	if b.token != "" {
		auth = "Authorization: Bearer " + b.token + "\r\n"
	}
	if _, err := fmt.Fprintf(c, "GET /v1/events HTTP/1.1\r\nHost: %s\r\n%s\r\n", u.Host, auth); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// watcher reads GET /v1/events in the background, counting events and
// gaps in their ids.
type watcher struct {
	mu      sync.Mutex
	firstID uint64
	lastID  uint64
	gaps    int
	done    chan struct{}
}

func (b *bench) watch(ctx context.Context) (*watcher, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", b.api+"/v1/events", nil)
	if err != nil {
		return nil, err
	}
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		return nil, fmt.Errorf("GET /v1/events: %s", resp.Status)
	}
	w := &watcher{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			v, ok := strings.CutPrefix(sc.Text(), "id: ")
			if !ok {
				continue
			}
			id, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			w.mu.Lock()
			if w.firstID == 0 {
				w.firstID = id
			} else if id != w.lastID+1 {
				w.gaps++
			}
			w.lastID = id
			w.mu.Unlock()
		}
	}()
	return w, nil
}

func (w *watcher) last() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastID
}

func (w *watcher) wait() { <-w.done }
