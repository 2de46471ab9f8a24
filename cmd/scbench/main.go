// Command scbench measures a running stream-conductor the way an operator
// would feel it: how long until a new port really forwards, how many
// streams a second it creates under concurrency, how fast it lists, whether
// reloads drop connections, and how much memory the daemon uses. It runs
// its own echo backend and prints a table and JSON lines.
//
//	scbench -url http://127.0.0.1:8080 -ports 9000-9999 [-token-file F] [-only raw,nginxrss,seq,latency,bulk,list,reload,spread,datapath,rss,expiry,bans]
//
// With -fleet it starts what it measures itself, on loopback: a 3-member
// etcd cluster, three STATE_STORE=etcd nodes and a single bbolt node, and
// compares them in one run (fleet.go).
//
//	scbench -fleet -daemon ./bin/stream-conductor -ports 14000-15099 -raw-base 16000 -raw-streams 10,1000
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
	"time"
)

// main is long because it is the flag list and then one step per measurement, in order.
func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "the daemon's API")
	ports := flag.String("ports", "9000-9009", "ports of the daemon's PORT_RANGE the tool may use (they must be free of streams)")
	tokenFile := flag.String("token-file", "", "file with the API token")
	only := flag.String("only", "raw,nginxrss,seq,events,latency,bulk,ranges,list,reload,spread,datapath,rss,expiry,bans", "measurements to run, in this order whatever the order given: raw (stock nginx floor), nginxrss (the daemon's nginx: RSS and PSS of every master of its pool and their workers, per -preload, fresh), seq (-seq sequential creates then deletes), events (seq alone, then again with -watchers clients on GET /v1/events and one that never reads), latency (create→ready and delete→refused, per -preload), bulk, ranges (create→ready of one stream on -range-ports ports against as many single streams imported at once), list, reload (one stream churning under traffic), spread (-changes over the shards under traffic), datapath, rss (the daemon, per -preload), expiry (-expiry-streams expiring at one moment: deadline → refused, against a prune import and DELETEs), bans (-ban-sources failing at once: last failure → refused, and the lift)")
	seqN := flag.Int("seq", 200, "streams for the sequential create-then-delete measurement")
	dataDir := flag.String("data-dir", "", "nginxrss: the daemon's DATA_DIR (default: read from the daemon's environment)")
	samples := flag.Int("samples", 20, "create→ready samples")
	preload := flag.String("preload", "0,100,1000", "stream counts already present while create→ready is measured")
	watchers := flag.Int("watchers", 100, "events: clients reading GET /v1/events while -seq creates and deletes run again")
	rangePorts := flag.Int("range-ports", 1000, "ranges: ports of the range, and of the single streams it is compared with")
	rangeSamples := flag.Int("range-samples", 3, "ranges: how many times each is created and deleted")
	bulkN := flag.Int("bulk", 1000, "streams for the concurrent-create measurement")
	bulkC := flag.Int("clients", 16, "concurrent clients for the concurrent-create measurement")
	listFor := flag.Duration("list-for", 5*time.Second, "how long to hammer GET /v1/streams")
	listConns := flag.Int("list-conns", 8, "connections for the list measurement")
	reloads := flag.Int("reloads", 100, "reloads for the reload-impact measurement")
	spreadN := flag.Int("spread-streams", 1024, "spread: streams imported first (the daemon spreads an import over its shards, 64 or more each)")
	changes := flag.Int("changes", 100, "spread: changes made under traffic (half updates, a quarter creates, a quarter deletes)")
	changeC := flag.Int("change-clients", 4, "spread: concurrent clients making the changes")
	nginxBin := flag.String("nginx", "", "nginx binary for the raw-nginx baseline (raw, datapath); default: nginx from PATH")
	rawStreams := flag.String("raw-streams", "10,100,1000", "stream counts of the raw-nginx baseline")
	flag.IntVar(&rawConns, "raw-conns", 0, "worker_connections of the raw-nginx baseline (default: stock, or just enough for its streams)")
	rawBase := flag.Int("raw-base", 30000, "first port the raw-nginx baseline may use (it needs raw-streams + samples + 1 ports)")
	fleet := flag.Bool("fleet", false, "start a 3-member etcd cluster, 3 STATE_STORE=etcd nodes (streams on 127.0.0.11-13) and a single bbolt node (127.0.0.1), all on -ports, and compare them in one run: write → applied on all nodes, -bulk creates from -clients spread over the nodes, memory per node; ignores -url and -only")
	expiryN := flag.Int("expiry-streams", 100, "expiry: streams created with the same expires_at, then deleted by the client")
	banSources := flag.Int("ban-sources", 50, "bans: source addresses (127.0.2.1 …) that fail at once (at most 254)")
	daemonBin := flag.String("daemon", "./bin/stream-conductor", "-fleet: the stream-conductor binary to start")
	etcdBin := flag.String("etcd", "etcd", "-fleet: the etcd binary")
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
	if *fleet {
		cfg := fleetConfig{daemonBin: *daemonBin, etcdBin: *etcdBin, nginxBin: *nginxBin, lo: lo, hi: hi,
			samples: *samples, bulkN: *bulkN, bulkC: *bulkC, rawBase: *rawBase, backend: echo}
		if err := cfg.resolve(*rawStreams); err != nil {
			fatal(err)
		}
		if err := runFleet(cfg); err != nil {
			fatal(err)
		}
		return
	}
	if err := b.clean(); err != nil {
		fatal(err)
	}
	selected := map[string]bool{}
	for _, name := range strings.Split(*only, ",") {
		selected[strings.TrimSpace(name)] = true
	}
	run := func(name string, f func() (map[string]any, error)) {
		if !selected[name] {
			return
		}
		res, err := f()
		if err != nil {
			fatal(fmt.Errorf("%s: %w", name, err))
		}
		res["measurement"] = name
		b.results = append(b.results, res)
		// Each result as it comes, on stderr: a later failure loses none.
		line, _ := json.Marshal(res)
		fmt.Fprintln(os.Stderr, string(line))
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
	preloads, err := parseCounts(*preload)
	if err != nil {
		fatal(fmt.Errorf("-preload: %w", err))
	}
	for _, count := range preloads {
		run("nginxrss", func() (map[string]any, error) { return b.nginxRSS(count, *dataDir) })
	}
	run("seq", func() (map[string]any, error) { return b.seq(*seqN) })
	run("events", func() (map[string]any, error) { return b.eventsLoad(*seqN, *watchers) })
	for _, count := range preloads {
		run("latency", func() (map[string]any, error) { return b.latency(*samples, count) })
	}
	run("bulk", func() (map[string]any, error) { return b.bulk(*bulkN, *bulkC) })
	run("ranges", func() (map[string]any, error) { return b.rangeVsSingles(*rangePorts, *rangeSamples) })
	run("list", func() (map[string]any, error) { return b.list(1000, *listFor, *listConns) })
	run("reload", func() (map[string]any, error) { return b.reloadImpact(*reloads) })
	run("spread", func() (map[string]any, error) { return b.spread(*spreadN, *changes, *changeC) })
	run("datapath", func() (map[string]any, error) { return b.datapath(*nginxBin, *rawBase) })
	for _, count := range preloads {
		run("rss", func() (map[string]any, error) { return b.rss(count) })
	}
	run("expiry", func() (map[string]any, error) { return b.expiry(*expiryN) })
	run("bans", func() (map[string]any, error) { return b.bans(*banSources) })
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

// parseCounts parses a comma-separated list of counts.
func parseCounts(list string) ([]int, error) {
	var out []int
	for _, n := range strings.Split(list, ",") {
		count, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || count < 0 {
			return nil, fmt.Errorf("%q is not a count", n)
		}
		out = append(out, count)
	}
	return out, nil
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

// shardStatus is one nginx master of the daemon's pool, as /v1/status
// lists it.
type shardStatus struct {
	Shard   int     `json:"shard"`
	PID     int     `json:"pid"`
	Streams int     `json:"streams"`
	Reloads float64 `json:"reloads"`
}

// shards returns the nginx masters of the daemon's pool; none when it
// runs one master (it lists no shards then) or predates the pool.
func (b *bench) shards() ([]shardStatus, error) {
	_, raw, err := b.do("GET", "/v1/status", "")
	if err != nil {
		return nil, err
	}
	var st struct {
		Reconciler struct {
			Shards []shardStatus `json:"shards"`
		} `json:"reconciler"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, err
	}
	return st.Reconciler.Shards, nil
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

// echoOnce reports whether a round trip through port on 127.0.0.1 works
// now.
func echoOnce(port int) bool { return echoAt("127.0.0.1", port) }

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
	go serveEcho(ln)
	return ln.Addr().String(), nil
}

// serveEcho echoes every connection of ln until ln is closed.
func serveEcho(ln net.Listener) {
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
}
