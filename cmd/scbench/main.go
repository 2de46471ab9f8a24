// Command scbench measures a running stream-conductor the way an operator
// would feel it: how long until a new port really forwards, how many
// streams a second it creates under concurrency, how fast it lists, whether
// reloads drop connections, and how much memory the daemon uses. It runs
// its own echo backend and prints a table and JSON lines.
//
//	scbench -url http://127.0.0.1:8080 -ports 9000-9999 [-token-file F] [-only latency,bulk,list,reload,rss]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "the daemon's API")
	ports := flag.String("ports", "9000-9009", "ports of the daemon's PORT_RANGE the tool may use (they must be free of streams)")
	tokenFile := flag.String("token-file", "", "file with the API token")
	only := flag.String("only", "raw,latency,bulk,list,reload,datapath,rss", "measurements to run")
	samples := flag.Int("samples", 20, "create→ready samples")
	preload := flag.String("preload", "0,100,1000", "stream counts already present while create→ready is measured")
	bulkN := flag.Int("bulk", 1000, "streams for the concurrent-create measurement")
	bulkC := flag.Int("clients", 16, "concurrent clients for the concurrent-create measurement")
	listFor := flag.Duration("list-for", 5*time.Second, "how long to hammer GET /v1/streams")
	listConns := flag.Int("list-conns", 8, "connections for the list measurement")
	reloads := flag.Int("reloads", 100, "reloads for the reload-impact measurement")
	nginxBin := flag.String("nginx", "", "nginx binary for the raw-nginx baseline (raw, datapath); default: nginx from PATH")
	rawStreams := flag.String("raw-streams", "10,100,1000", "stream counts of the raw-nginx baseline")
	flag.IntVar(&rawConns, "raw-conns", 0, "worker_connections of the raw-nginx baseline (default: stock, or just enough for its streams)")
	rawBase := flag.Int("raw-base", 30000, "first port the raw-nginx baseline may use (it needs raw-streams + samples + 1 ports)")
	flag.Parse()

	lo, hi, err := parseRange(*ports)
	if err != nil {
		fatal(err)
	}
	b := &bench{api: strings.TrimSuffix(*url, "/"), lo: lo, hi: hi,
		http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	if *tokenFile != "" {
		t, err := os.ReadFile(*tokenFile)
		if err != nil {
			fatal(err)
		}
		b.token = strings.TrimSpace(string(t))
	}
	echo, err := startEcho()
	if err != nil {
		fatal(err)
	}
	b.backend = echo
	if err := b.clean(); err != nil {
		fatal(err)
	}
	run := func(name string, f func() (map[string]any, error)) {
		if !strings.Contains(*only, name) {
			return
		}
		res, err := f()
		if err != nil {
			fatal(fmt.Errorf("%s: %w", name, err))
		}
		res["measurement"] = name
		b.results = append(b.results, res)
		if err := b.clean(); err != nil {
			fatal(err)
		}
	}
	if *nginxBin == "" {
		if p, err := exec.LookPath("nginx"); err == nil {
			*nginxBin = p
		} else {
			*nginxBin = "/usr/sbin/nginx"
		}
	}
	for _, n := range strings.Split(*rawStreams, ",") {
		count, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil {
			fatal(fmt.Errorf("-raw-streams: %w", err))
		}
		run("raw", func() (map[string]any, error) {
			return rawReloadToEcho(*nginxBin, count, *rawBase, *samples, b.backend)
		})
	}
	for _, n := range strings.Split(*preload, ",") {
		count, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil {
			fatal(fmt.Errorf("-preload: %w", err))
		}
		run("latency", func() (map[string]any, error) { return b.latency(*samples, count) })
	}
	run("bulk", func() (map[string]any, error) { return b.bulk(*bulkN, *bulkC) })
	run("list", func() (map[string]any, error) { return b.list(1000, *listFor, *listConns) })
	run("reload", func() (map[string]any, error) { return b.reloadImpact(*reloads) })
	run("datapath", func() (map[string]any, error) { return b.datapath(*nginxBin, *rawBase) })
	run("rss", func() (map[string]any, error) { return b.rss() })
	b.print()
}

type bench struct {
	api, token, backend string
	lo, hi              int
	http                *http.Client
	results             []map[string]any
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "scbench:", err)
	os.Exit(1)
}

func parseRange(r string) (int, int, error) {
	a, b, ok := strings.Cut(r, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("-ports must be FIRST-LAST, not %q", r)
	}
	return lo, hi, nil
}

// do sends one API request and returns the status and body.
func (b *bench) do(method, path, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, b.api+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// counters returns the reconciler's counters.
func (b *bench) counters() (map[string]float64, int, error) {
	_, raw, err := b.do("GET", "/v1/status", "")
	if err != nil {
		return nil, 0, err
	}
	var st struct {
		PID        int `json:"pid"`
		Reconciler struct {
			Counters map[string]float64 `json:"counters"`
		} `json:"reconciler"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, 0, err
	}
	return st.Reconciler.Counters, st.PID, nil
}

// clean removes every stream on the tool's ports, in one import.
func (b *bench) clean() error {
	_, raw, err := b.do("GET", "/v1/export", "")
	if err != nil {
		return fmt.Errorf("the daemon is not answering at %s: %w", b.api, err)
	}
	var doc struct {
		Streams []map[string]any `json:"streams"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return err
	}
	keep := doc.Streams[:0]
	for _, s := range doc.Streams {
		if p := int(s["listen"].(float64)); p < b.lo || p > b.hi {
			keep = append(keep, s)
		}
	}
	body, _ := json.Marshal(map[string]any{"streams": keep})
	code, raw, err := b.do("POST", "/v1/import?prune=true", string(body))
	if err != nil || code != 200 {
		return fmt.Errorf("clean: %d %s %v", code, raw, err)
	}
	return nil
}

// importStreams creates n streams from port first on, in one import.
func (b *bench) importStreams(first, n int) error {
	if n == 0 {
		return nil
	}
	streams := make([]map[string]any, n)
	for i := range streams {
		streams[i] = map[string]any{"protocol": "tcp", "listen": first + i, "backend": b.backend}
	}
	body, _ := json.Marshal(map[string]any{"streams": streams})
	if code, raw, err := b.do("POST", "/v1/import", string(body)); err != nil || code != 200 {
		return fmt.Errorf("import %d streams: %d %s %v", n, code, raw, err)
	}
	return nil
}

// echoOnce reports whether a round trip through port works now.
func echoOnce(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
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

// waitEcho polls until a round trip through port works; the poll interval
// is 1 ms, and it gives up after 10 s.
func waitEcho(port int) (time.Time, bool) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if echoOnce(port) {
			return time.Now(), true
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, false
}

func (b *bench) put(port int, extra string) (int, error) {
	code, raw, err := b.do("PUT", fmt.Sprintf("/v1/streams/tcp/%d", port), `{"backend":"`+b.backend+`"`+extra+`}`)
	if err == nil && code >= 300 {
		err = fmt.Errorf("PUT %d: %d %s", port, code, bytes.TrimSpace(raw))
	}
	return code, err
}

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

func (b *bench) print() {
	fmt.Printf("%-10s %s\n", "MEASURE", "RESULT")
	for _, r := range b.results {
		keys := make([]string, 0, len(r))
		for k := range r {
			if k != "measurement" {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%v", k, round(r[k])))
		}
		fmt.Printf("%-10s %s\n", r["measurement"], strings.Join(parts, " "))
	}
	for _, r := range b.results {
		line, _ := json.Marshal(r)
		fmt.Println(string(line))
	}
}

func round(v any) any {
	if f, ok := v.(float64); ok {
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	return v
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// startEcho runs the echo backend every stream of the tool points at.
func startEcho() (string, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String(), nil
}
