package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Issue 16, part 1 and deny lists: real clients through real nginx.
// Streams listen on 127.0.0.1 (STREAM_BIND_ADDRESS); clients connect
// from 127.0.0.1 or, by binding their end, from 127.0.0.2.

// countingEcho is an echo backend (as startEcho, tag "") that counts the
// connections it accepted.
type countingEcho struct {
	*echoServer
	accepted atomic.Int64
}

func startCountingEcho(t *testing.T) *countingEcho {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	e := &countingEcho{echoServer: &echoServer{ln: ln}}
	acceptEach(ln, &e.accepted, e.serve)
	return e
}

// mustDialFrom connects to 127.0.0.1:port from the loopback address src.
func mustDialFrom(t *testing.T, src string, port int) net.Conn {
	t.Helper()
	c, err := dialFrom(src, port)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	return c
}

// openSession connects from src and requires a round trip through the
// backend: nginx has then counted the session against its limits.
func openSession(t *testing.T, src string, port int) net.Conn {
	t.Helper()
	c := mustDialFrom(t, src, port)
	msg := fmt.Sprintf("hello from %s\n", src)
	if got, err := roundTrip(c, msg); err != nil || got != msg {
		c.Close()
		t.Fatalf("session from %s through port %d: got %q, %v", src, port, got, err)
	}
	c.SetDeadline(time.Time{})
	return c
}

// sessionOutcome connects from src, sends a line and says what became of
// it: answered (the backend echoed it), or refused (nginx ended the
// connection without an answer: end of file or reset). Anything else, a
// dial error or no answer within 3 s, fails the test.
func sessionOutcome(t *testing.T, src string, port int) (refused bool) {
	t.Helper()
	c := mustDialFrom(t, src, port)
	defer c.Close()
	msg := "are you there?\n"
	got, err := roundTrip(c, msg)
	switch {
	case err == nil && got == msg:
		return false
	case got == "" && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)):
		return true
	}
	t.Fatalf("session from %s through port %d: neither answered nor refused: got %q, %v", src, port, got, err)
	return false
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// refusedCounts returns stream id's refused sessions as its API answer
// and /metrics show them: limit and deny, from each.
func refusedCounts(t *testing.T, d *daemon, id string) (api, metrics [2]float64) {
	t.Helper()
	_, m := d.api("GET", "/v1/streams/"+id, "")
	tr, _ := m["traffic"].(map[string]any)
	ref, _ := tr["refused"].(map[string]any)
	api[0], _ = ref["limit"].(float64)
	api[1], _ = ref["deny"].(float64)
	_, raw := d.apiRaw("GET", "/metrics", "")
	text := string(raw)
	if !strings.Contains(text, `stream_conductor_stream_sessions_refused_total{reason="limit",stream="`+id+`"}`) {
		return api, metrics // no session logged yet
	}
	metrics[0] = metricValue(t, text, `stream_conductor_stream_sessions_refused_total{reason="limit",stream="`+id+`"}`)
	metrics[1] = metricValue(t, text, `stream_conductor_stream_sessions_refused_total{reason="deny",stream="`+id+`"}`)
	return api, metrics
}

// waitRefusedCounts polls until the API and /metrics both count exactly
// limit and deny refusals for stream id.
func waitRefusedCounts(t *testing.T, d *daemon, id string, limit, deny int) {
	t.Helper()
	want := [2]float64{float64(limit), float64(deny)}
	var api, metrics [2]float64
	eventually(t, fmt.Sprintf("%s: %d sessions refused by a limit and %d by deny, in the API and /metrics", id, limit, deny), 10*time.Second, func() bool {
		api, metrics = refusedCounts(t, d, id)
		return api == want && metrics == want
	})
}

// With max_connections N, N sessions are served at once and the N+1st is
// refused by nginx at once, without reaching the backend; when one of the
// N closes, the next is served again. Each refusal is counted.
func TestLimits16MaxConnections(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startCountingEcho(t)
	const limit = 3
	port := d.portMin
	id := fmt.Sprintf("tcp/%d", port)
	d.mustPut("tcp", port, fmt.Sprintf(`{"backend":"%s","max_connections":%d}`, be.addr(), limit))

	var open []net.Conn
	for range limit {
		open = append(open, openSession(t, "127.0.0.1", port))
	}
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	if n := be.accepted.Load(); n != limit {
		t.Fatalf("the backend accepted %d connections, want %d", n, limit)
	}
	refusals := 0
	for range 3 {
		if !sessionOutcome(t, "127.0.0.1", port) {
			t.Fatalf("session %d of %d at once was served; max_connections is %d", limit+1+refusals, limit+1+refusals, limit)
		}
		refusals++
	}
	if n := be.accepted.Load(); n != limit {
		t.Fatalf("refused sessions reached the backend: it accepted %d connections, want %d", n, limit)
	}
	waitRefusedCounts(t, d, id, refusals, 0)

	// One closes: a new session is served again (once nginx has seen the
	// close; until then it may still be refused, and counted).
	open[0].Close()
	open = open[1:]
	eventually(t, "a session served again after one of the "+strconv.Itoa(limit)+" closed", 10*time.Second, func() bool {
		if sessionOutcome(t, "127.0.0.1", port) {
			refusals++
			return false
		}
		return true
	})
	waitRefusedCounts(t, d, id, refusals, 0)

	// A range is limited as a whole: its ports share the one limit.
	lo := d.portMax - 1
	if code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d-%d", lo, d.portMax), fmt.Sprintf(`{"backend":"%s","max_connections":1}`, be.addr())); code != 201 {
		t.Fatalf("PUT range: %d %v", code, m)
	}
	held := openSession(t, "127.0.0.1", lo)
	defer held.Close()
	if !sessionOutcome(t, "127.0.0.1", d.portMax) {
		t.Fatal("the second port of a range with max_connections 1 served a session while the first holds one")
	}
}

// With max_connections_per_client N, a client address with N sessions
// open is refused another, while another address is still served.
func TestLimits16MaxConnectionsPerClient(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1)
	be := startCountingEcho(t)
	port := d.portMin
	id := fmt.Sprintf("tcp/%d", port)
	d.mustPut("tcp", port, fmt.Sprintf(`{"backend":"%s","max_connections_per_client":2}`, be.addr()))

	a1 := openSession(t, "127.0.0.1", port)
	defer a1.Close()
	a2 := openSession(t, "127.0.0.1", port)
	defer a2.Close()
	if !sessionOutcome(t, "127.0.0.1", port) {
		t.Fatal("a third session from 127.0.0.1 was served; max_connections_per_client is 2")
	}
	b1 := openSession(t, "127.0.0.2", port)
	defer b1.Close()
	b2 := openSession(t, "127.0.0.2", port)
	defer b2.Close()
	if !sessionOutcome(t, "127.0.0.2", port) {
		t.Fatal("a third session from 127.0.0.2 was served; max_connections_per_client is 2")
	}
	if n := be.accepted.Load(); n != 4 {
		t.Fatalf("the backend accepted %d connections, want the 4 served", n)
	}
	waitRefusedCounts(t, d, id, 2, 0)
}

// A denied address is refused, also inside an allowed network (deny is
// checked first); the rest of the network is served. Each refusal is
// counted as deny, apart from those of a limit.
func TestLimits16Deny(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1)
	be := startCountingEcho(t)
	port := d.portMin
	id := fmt.Sprintf("tcp/%d", port)
	d.mustPut("tcp", port, fmt.Sprintf(`{"backend":"%s","allow":["127.0.0.0/8"],"deny":["127.0.0.2"]}`, be.addr()))

	for range 3 {
		if !sessionOutcome(t, "127.0.0.2", port) {
			t.Fatal("127.0.0.2 was served; it is denied")
		}
	}
	if sessionOutcome(t, "127.0.0.1", port) {
		t.Fatal("127.0.0.1 was refused; it is allowed and not denied")
	}
	if sessionOutcome(t, "127.0.0.3", port) {
		t.Fatal("127.0.0.3 was refused; it is allowed and not denied")
	}
	if n := be.accepted.Load(); n != 2 {
		t.Fatalf("the backend accepted %d connections, want the 2 served", n)
	}
	waitRefusedCounts(t, d, id, 0, 3)

	// Lifting the deny entry lets 127.0.0.2 in.
	d.mustPut("tcp", port, fmt.Sprintf(`{"backend":"%s","allow":["127.0.0.0/8"]}`, be.addr()))
	if sessionOutcome(t, "127.0.0.2", port) {
		t.Fatal("127.0.0.2 still refused after its deny entry was removed")
	}
}

// upload_rate and download_rate bound the bytes per second of a
// connection: a bulk transfer in each direction moves at the rate, within
// 20%, measured at the receiving end between 1.5 and 3.5 seconds' worth
// of bytes (nginx lets a first second's worth through at once).
func TestLimits16Rates(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	const rate = 256 << 10
	down := startBulkSender(t)
	up := newBulkReceiver(t)
	d.mustPut("tcp", d.portMin, fmt.Sprintf(`{"backend":"%s","download_rate":"256k"}`, down))
	d.mustPut("tcp", d.portMax, fmt.Sprintf(`{"backend":"%s","upload_rate":"256k"}`, up.ln.Addr()))

	var wg sync.WaitGroup
	var downRate, upRate float64
	var downErr, upErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(d.portMin))
		if err != nil {
			downErr = err
			return
		}
		defer c.Close()
		downRate, downErr = measureRate(c, rate)
	}()
	go func() {
		defer wg.Done()
		c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(d.portMax))
		if err != nil {
			upErr = err
			return
		}
		defer c.Close()
		go sendBulk(c)
		upRate, upErr = up.measure(rate)
	}()
	wg.Wait()
	for _, r := range []struct {
		what string
		got  float64
		err  error
	}{{"download_rate", downRate, downErr}, {"upload_rate", upRate, upErr}} {
		if r.err != nil {
			t.Fatalf("%s: %v", r.what, r.err)
		}
		ratio := r.got / rate
		t.Logf("%s 256k: measured %.0f bytes/s, %.2f of the limit", r.what, r.got, ratio)
		if ratio < 0.8 || ratio > 1.2 {
			t.Errorf("%s 256k: measured %.0f bytes/s, %.2f of the limit, want 0.8-1.2", r.what, r.got, ratio)
		}
	}
}

// measureRate reads r until 3.5 seconds' worth of bytes at rate came, or
// 15 s passed, and returns the bytes per second between 1.5 and 3.5
// seconds' worth.
func measureRate(r io.Reader, rate int) (float64, error) {
	lo, hi := rate*3/2, rate*7/2
	var got int
	var start time.Time
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(15 * time.Second)
	if c, ok := r.(net.Conn); ok {
		c.SetReadDeadline(deadline)
	}
	for got < hi {
		n, err := r.Read(buf)
		got += n
		if start.IsZero() && got >= lo {
			start = time.Now()
		}
		if err != nil {
			return 0, fmt.Errorf("after %d bytes: %w", got, err)
		}
	}
	return float64(hi-lo) / time.Since(start).Seconds(), nil
}

// startBulkSender is a backend that writes zeros to every connection
// until it closes.
func startBulkSender(t *testing.T) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	acceptEach(ln, nil, sendBulk)
	return ln.Addr()
}

// sendBulk writes zeros to c until a write fails (for at most 30 s).
func sendBulk(c net.Conn) {
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 32<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// bulkReceiver is a backend whose first connection is read by measure.
type bulkReceiver struct {
	ln    net.Listener
	conns chan net.Conn
}

func newBulkReceiver(t *testing.T) *bulkReceiver {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b := &bulkReceiver{ln: ln, conns: make(chan net.Conn, 1)}
	acceptEach(ln, nil, func(c net.Conn) {
		select {
		case b.conns <- c:
		default:
			c.Close()
		}
	})
	return b
}

// measure waits for the first connection and measures its rate.
func (b *bulkReceiver) measure(rate int) (float64, error) {
	select {
	case c := <-b.conns:
		defer c.Close()
		return measureRate(c, rate)
	case <-time.After(10 * time.Second):
		return 0, errors.New("nginx did not connect to the backend within 10s")
	}
}

// Hostile and wrong limits are refused by the real API with a JSON error
// naming the field; the store, nginx's configuration and the traffic of
// the stream already there are intact.
func TestLimits16HostileInputs(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, fmt.Sprintf(`{"backend":"%s","max_connections":5,"deny":["127.0.0.9"]}`, be.addr()))
	_, st := d.api("GET", "/v1/status", "")
	rev0 := st["store_revision"]
	for _, tc := range []struct{ name, fields, field string }{
		{"max_connections 65536", `"max_connections":65536`, "max_connections"},
		{"max_connections negative", `"max_connections":-1`, "max_connections"},
		{"max_connections text", `"max_connections":"5; limit_conn x 1"`, "max_connections"},
		{"per client huge", `"max_connections_per_client":1e12`, "max_connections_per_client"},
		{"upload_rate injection", `"upload_rate":"1m; proxy_pass 127.0.0.1:1"`, "upload_rate"},
		{"upload_rate brace", `"upload_rate":"1m }"`, "upload_rate"},
		{"download_rate unit g", `"download_rate":"1g"`, "download_rate"},
		{"download_rate zero", `"download_rate":"0"`, "download_rate"},
		{"deny injection", `"deny":["127.0.0.2; allow all"]`, "deny"},
		{"deny all", `"deny":["all"]`, "deny"},
		{"deny name", `"deny":["localhost"]`, "deny"},
		{"deny covering allow", `"allow":["127.0.0.1"],"deny":["127.0.0.0/8"]`, "deny"},
	} {
		code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), fmt.Sprintf(`{"backend":"%s",%s}`, be.addr(), tc.fields))
		e, _ := m["error"].(map[string]any)
		if code != 400 || e["code"] != "invalid" || e["field"] != tc.field {
			t.Errorf("%s: %d %v, want 400 invalid on %s", tc.name, code, m, tc.field)
		}
	}
	if _, st := d.api("GET", "/v1/status", ""); st["store_revision"] != rev0 {
		t.Fatalf("the store changed: revision %v -> %v", rev0, st["store_revision"])
	}
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), ""); code != 404 {
		t.Fatalf("a refused stream exists: %d", code)
	}
	if err := d.nginxTest(); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, d.portMin, "A:")
}

// In a pool of nginx masters each limited stream is limited by the master
// that serves it, its zone apart from the others'; and a reload keeps a
// stream's zone with its count: a session open before a change of the
// limit still counts against the new one.
func TestLimits16PoolAndReload(t *testing.T) {
	t.Parallel()
	const n = 4
	d := startDaemon(t, n, "NGINX_SHARDS=4")
	be := startCountingEcho(t)
	body := func(limit int) string {
		return fmt.Sprintf(`{"backend":"%s","max_connections":%d}`, be.addr(), limit)
	}
	for i := range n {
		d.mustPut("tcp", d.portMin+i, body(1))
	}
	if len(d.shards()) < 2 {
		t.Fatalf("the streams are on one master: %v", d.shards())
	}
	for i := range n {
		held := openSession(t, "127.0.0.1", d.portMin+i)
		defer held.Close()
		if !sessionOutcome(t, "127.0.0.1", d.portMin+i) {
			t.Fatalf("tcp/%d (max_connections 1) served a second session", d.portMin+i)
		}
	}
	// Raise one stream's limit to 2: its master reloads; the session held
	// since before still counts, so one more is served, not two.
	reloads := d.shards()
	d.mustPut("tcp", d.portMin, body(2))
	eventually(t, "a reload for the new limit", 10*time.Second, func() bool {
		for k, s := range d.shards() {
			if s.reloads > reloads[k].reloads {
				return true
			}
		}
		return false
	})
	second := openSession(t, "127.0.0.1", d.portMin)
	defer second.Close()
	if !sessionOutcome(t, "127.0.0.1", d.portMin) {
		t.Fatal("after the reload a third session was served with max_connections 2: the zone forgot the session open before the reload")
	}
}
