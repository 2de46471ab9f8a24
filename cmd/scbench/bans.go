package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// banPolicy is the ban policy of the bans measurement's stream, and
// banFailures its "after": the failing sessions each source makes.
const (
	banPolicy   = `{"after":3,"within":"1m","for":"1h"}`
	banFailures = 3
	banRounds   = 5
)

// bans measures automatic bans: one stream with a ban policy and a limit
// of one session per client, to an echo backend; n sources (127.0.2.1 …)
// each hold one session open and make banFailures more at once, all at the
// same time (nginx refuses them with 503: the failures a ban counts), then
// close the one they held. A source is banned once its
// session is closed without an echo while 127.0.0.1's still gets one. It
// reports the time from each source's last failure until it is refused,
// and from the end of the first failures until the last source is
// refused, the reloads that took, and the lift: DELETE
// /v1/bans/tcp/PORT → every source echoes again. A source not refused
// 5 s after its failures (nginx's session log lost its lines: the kernel
// queues net.unix.max_dgram_qlen of them) fails again, with the others
// left, for banRounds rounds at most: how many the first round banned,
// and the lines nginx could not send, are reported.
func (b *bench) bans(n int) (map[string]any, error) {
	srcs, err := sourceAddrs(n)
	if err != nil {
		return nil, err
	}
	backend, err := newSwitchEcho()
	if err != nil {
		return nil, err
	}
	defer backend.stop()
	port := b.lo
	id := "tcp/" + strconv.Itoa(port)
	body := fmt.Sprintf(`{"backend":%q,"max_connections_per_client":1,"ban":%s}`, backend.addr, banPolicy)
	if code, raw, err := b.do("PUT", "/v1/streams/"+id, body); err != nil || code >= 300 {
		return nil, fmt.Errorf("PUT %s: %d %s %v", id, code, raw, err)
	}
	if _, ok := waitEcho(port); !ok {
		return nil, fmt.Errorf("%s does not forward", id)
	}
	before, pid, err := b.counters()
	if err != nil {
		return nil, err
	}
	lostBefore := syslogLost(pid)
	r, err := banUntilRefused(srcs, port)
	if err != nil {
		return nil, err
	}
	control := echoAt("127.0.0.1", port)
	after, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	listed, err := b.listedBans(id)
	if err != nil {
		return nil, err
	}
	ds, never := between(r.lastFail, r.refusedAt)
	res := map[string]any{"sources": n, "policy": banPolicy, "rounds": r.rounds, "first_round_banned": r.firstBanned,
		"first_round_all_banned_ms": ms(r.firstLast.Sub(r.firstEnd)),
		"poll_ms":                   ms(pollEvery), "listed": len(listed), "never_refused": never, "loopback_echoes": control,
		"reloads": after["nginx_reloads"] - before["nginx_reloads"]}
	merge(res, "banned_", durationStats(ds))
	if never == 0 {
		res["all_banned_ms"] = ms(latest(r.refusedAt).Sub(r.firstEnd))
	}
	if lostAfter := syslogLost(pid); lostBefore >= 0 && lostAfter >= 0 {
		res["syslog_lost"] = lostAfter - lostBefore
	}
	lift, err := b.liftAll(srcs, port, id)
	if err != nil {
		return nil, err
	}
	merge(res, "lift_", lift)
	return res, nil
}

// banRun is what banUntilRefused saw: per source, when its last failing
// session ended and when it was refused (zero: never); when the first
// round's failures ended, how many sources that round banned and when
// the last of them was refused; the rounds.
type banRun struct {
	lastFail, refusedAt []time.Time
	firstEnd, firstLast time.Time
	firstBanned, rounds int
}

// banUntilRefused runs rounds: every source not refused yet holds a
// session and makes banFailures failing sessions at once, lets go of the
// one it held, and is polled for 5 s until it is refused; at most
// banRounds rounds.
func banUntilRefused(srcs []string, port int) (banRun, error) {
	r := banRun{lastFail: make([]time.Time, len(srcs)), refusedAt: make([]time.Time, len(srcs))}
	pending := make([]int, len(srcs))
	for i := range pending {
		pending[i] = i
	}
	for ; r.rounds < banRounds && len(pending) > 0; r.rounds++ {
		var subset []string
		for _, i := range pending {
			subset = append(subset, srcs[i])
		}
		held := holdAll(subset, port)
		ends, err := failAtOnce(subset, port)
		for _, c := range held {
			c.Close()
		}
		if err != nil {
			return r, err
		}
		refused := pollSources(subset, port, true, 5*time.Second)
		if r.rounds == 0 {
			r.firstEnd, r.firstLast = latest(ends), latest(refused)
			_, never := between(ends, refused)
			r.firstBanned = len(subset) - never
		}
		var left []int
		for k, i := range pending {
			r.lastFail[i], r.refusedAt[i] = ends[k], refused[k]
			if refused[k].IsZero() {
				left = append(left, i)
			}
		}
		pending = left
	}
	return r, nil
}

// failAtOnce makes banFailures sessions from each of srcs through port,
// all at once, each of which must be closed without an echo (its source
// holds the one session it may have), and returns when each source's
// last one ended.
func failAtOnce(srcs []string, port int) ([]time.Time, error) {
	ends := make([]time.Time, len(srcs))
	errs := make(chan error, len(srcs)*banFailures)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, src := range srcs {
		for range banFailures {
			wg.Add(1)
			go func() {
				defer wg.Done()
				closed, err := sessionFrom(src, port)
				if err == nil && !closed {
					err = fmt.Errorf("a session from %s got an echo past its limit of one", src)
				}
				errs <- err
				mu.Lock()
				ends[i] = latest([]time.Time{ends[i], time.Now()})
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return ends, nil
}

// listedBans is the set of addresses GET /v1/bans lists as banned from id.
func (b *bench) listedBans(id string) (map[string]bool, error) {
	code, raw, err := b.do("GET", "/v1/bans?stream="+id, "")
	if err != nil || code != 200 {
		return nil, fmt.Errorf("GET /v1/bans: %d %s %v", code, raw, err)
	}
	var doc struct {
		Bans []struct {
			Address string `json:"address"`
		} `json:"bans"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, ban := range doc.Bans {
		out[ban.Address] = true
	}
	return out, nil
}

// liftAll lifts every ban of id with one DELETE and times, from the
// request, its reply and until every source gets an echo again.
func (b *bench) liftAll(srcs []string, port int, id string) (map[string]any, error) {
	before, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	code, raw, err := b.do("DELETE", "/v1/bans/"+id, "")
	reply := time.Since(t0)
	if err != nil || code != 200 {
		return nil, fmt.Errorf("DELETE /v1/bans/%s: %d %s %v", id, code, raw, err)
	}
	var doc struct {
		Lifted  []string `json:"lifted"`
		Applied bool     `json:"applied"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	echoed := pollSources(srcs, port, false, 10*time.Second)
	after, _, err := b.counters()
	if err != nil {
		return nil, err
	}
	origin := make([]time.Time, len(srcs))
	for i := range origin {
		origin[i] = t0
	}
	ds, never := between(origin, echoed)
	res := durationStats(ds)
	res["reply_ms"], res["lifted"], res["applied"], res["never_echoed"] = ms(reply), len(doc.Lifted), doc.Applied, never
	res["reloads"] = after["nginx_reloads"] - before["nginx_reloads"]
	return res, nil
}

// pollSources tries a session from each of srcs through port every
// pollEvery, for d at most, until it is closed without an echo
// (wantClosed) or gets one (!wantClosed), and returns when that
// happened to each (zero: never).
func pollSources(srcs []string, port int, wantClosed bool, d time.Duration) []time.Time {
	at := make([]time.Time, len(srcs))
	giveUp := time.Now().Add(d)
	var wg sync.WaitGroup
	for i, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(giveUp) {
				if closed, err := sessionFrom(src, port); err == nil && closed == wantClosed {
					at[i] = time.Now()
					return
				}
				time.Sleep(pollEvery)
			}
		}()
	}
	wg.Wait()
	return at
}

// sessionFrom makes one session from src through port on 127.0.0.1 and
// reports whether nginx closed it without an echo (true) or echoed
// (false), having waited for its end so that nginx has logged it; an
// error when it could not connect, or got neither within 2 s.
func sessionFrom(src string, port int) (bool, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return true, nil // reset before the write: closed
	}
	buf := make([]byte, 5)
	n, err := io.ReadFull(c, buf)
	var ne net.Error
	switch {
	case err == nil && string(buf) == "ping\n":
		return false, nil
	case n == 0 && !(errors.As(err, &ne) && ne.Timeout()):
		return true, nil
	}
	return false, fmt.Errorf("session from %s through %d: %d bytes, %v", src, port, n, err)
}

// holdAll opens a session from each of srcs through port and makes a
// round trip through it, so that nginx counts it against the source's
// limit (a source refused meanwhile holds none); the caller closes them.
func holdAll(srcs []string, port int) []net.Conn {
	var held []net.Conn
	for _, src := range srcs {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 5)
			if _, err = c.Write([]byte("ping\n")); err == nil {
				_, err = io.ReadFull(c, buf)
			}
			c.SetDeadline(time.Time{})
		}
		if err != nil { // refused: banned since it was last polled
			if c != nil {
				c.Close()
			}
			continue
		}
		held = append(held, c)
	}
	return held
}

// sourceAddrs is n source addresses 127.0.2.1 … 127.0.2.n (not
// 127.0.0.1, which is never banned).
func sourceAddrs(n int) ([]string, error) {
	if n < 1 || n > 254 {
		return nil, fmt.Errorf("-ban-sources must be 1 to 254, not %d", n)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.2.%d", i+1)
	}
	return out, nil
}

// between is to[i]-from[i] for each i whose to is set, and how many are
// not (never).
func between(from, to []time.Time) (ds []time.Duration, never int) {
	for i, t := range to {
		if t.IsZero() {
			never++
			continue
		}
		ds = append(ds, t.Sub(from[i]))
	}
	return ds, never
}

// latest is the latest of ts.
func latest(ts []time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// switchEcho is an echo backend on a fixed address that can be stopped
// (connects to it are refused) and started again.
type switchEcho struct {
	addr string
	mu   sync.Mutex
	ln   net.Listener
}

func newSwitchEcho() (*switchEcho, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go serveEcho(ln)
	return &switchEcho{addr: ln.Addr().String(), ln: ln}, nil
}

// start listens on its address again.
func (e *switchEcho) start() error {
	ln, err := net.Listen("tcp4", e.addr)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.ln = ln
	e.mu.Unlock()
	go serveEcho(ln)
	return nil
}

// stop closes its listener; sessions already accepted go on.
func (e *switchEcho) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ln != nil {
		e.ln.Close()
		e.ln = nil
	}
}

// syslogLost counts the lines "send() to syslog failed" in the error logs
// of the nginx pool of the daemon pid (this host only): session log lines
// the kernel dropped (its queue holds net.unix.max_dgram_qlen), each a
// session the daemon did not see. -1: the logs cannot be read.
func syslogLost(pid int) int {
	dataDir, err := envOf(pid, "DATA_DIR")
	if err != nil {
		return -1
	}
	shards, _ := filepath.Glob(filepath.Join(dataDir, "nginx", "shard-*", "error.log"))
	n := 0
	for _, f := range append([]string{filepath.Join(dataDir, "nginx", "error.log")}, shards...) {
		raw, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return -1
		}
		n += bytes.Count(raw, []byte("send() to syslog failed"))
	}
	return n
}
