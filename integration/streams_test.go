package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A TCP stream end to end: create, read, traffic, replace, delete.
func TestTCPStreamLifecycle(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 4)
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	port := d.portMin

	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", port), `{"backend":"`+a.addr()+`"}`)
	if code != 201 || m["status"].(map[string]any)["state"] != "active" || m["id"] != fmt.Sprintf("tcp/%d", port) {
		t.Fatalf("PUT: %d %v", code, m)
	}
	// "active" in the reply means the port works now: no retry needed.
	mustEcho(t, port, "A:")

	code, m = d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", port), "")
	if code != 200 || m["backends"].([]any)[0] != a.addr() {
		t.Fatalf("GET: %d %v", code, m)
	}
	code, m = d.api("GET", "/v1/streams", "")
	if code != 200 || len(m["streams"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, m)
	}

	// A connection opened before the change keeps its backend; new ones go
	// to the new backend.
	old, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got, err := roundTrip(old, "before\n"); err != nil || got != "A:before\n" {
		t.Fatalf("old connection: %q %v", got, err)
	}
	d.mustPut("tcp", port, `{"backend":"`+b.addr()+`"}`)
	mustEcho(t, port, "B:")
	if got, err := roundTrip(old, "after\n"); err != nil || got != "A:after\n" {
		t.Fatalf("connection opened before the replace: %q %v", got, err)
	}

	code, _ = d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", port), "")
	if code != 204 {
		t.Fatalf("DELETE: %d", code)
	}
	// The 204 means applied: the port is closed already.
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
		c.Close()
		t.Fatal("the port still accepts connections after DELETE answered")
	}
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", port), ""); code != 404 {
		t.Fatalf("GET after DELETE: %d", code)
	}
}

// POST allocates atomically: 8 concurrent clients on 8 ports get 8
// distinct ports, the 9th gets 409.
func TestPostAllocationIsAtomic(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 8)
	be := startEcho(t, "E:")
	type result struct {
		code int
		port int
	}
	results := make(chan result, 9)
	var wg sync.WaitGroup
	for range 9 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, m := d.api("POST", "/v1/streams", `{"backend":"`+be.addr()+`"}`)
			r := result{code: code}
			if code == 201 {
				r.port = int(m["listen"].(float64))
			}
			results <- r
		}()
	}
	wg.Wait()
	close(results)
	seen := map[int]bool{}
	conflicts := 0
	for r := range results {
		switch r.code {
		case 201:
			if seen[r.port] || r.port < d.portMin || r.port > d.portMax {
				t.Errorf("port %d given twice or outside the range", r.port)
			}
			seen[r.port] = true
		case 409:
			conflicts++
		default:
			t.Errorf("POST answered %d", r.code)
		}
	}
	if len(seen) != 8 || conflicts != 1 {
		t.Fatalf("%d ports allocated, %d conflicts; want 8 and 1", len(seen), conflicts)
	}
	for port := range seen {
		mustEcho(t, port, "E:")
	}
}

// The routes of the original service, with its JSON shapes.
func TestSeedRoutesEndToEnd(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "S:")

	code, m := d.api("GET", "/status", "")
	if code != 200 || m["available_ports"] != float64(3) || m["version"] == nil {
		t.Fatalf("/status: %d %v", code, m)
	}
	code, m = d.api("GET", "/getfreeport", "")
	if code != 200 || m["result"] != "ok" || m["port"] != float64(d.portMin) {
		t.Fatalf("/getfreeport: %d %v", code, m)
	}
	code, m = d.api("GET", fmt.Sprintf("/createstream/%d/%s", d.portMin, be.addr()), "")
	if code != 200 || m["result"] != "ok" {
		t.Fatalf("/createstream: %d %v", code, m)
	}
	mustEcho(t, d.portMin, "S:")
	if _, m = d.api("GET", fmt.Sprintf("/hasstream/%d", d.portMin), ""); m["result"] != "true" {
		t.Fatalf("/hasstream: %v", m)
	}
	_, raw := d.apiRaw("GET", "/getstreams", "")
	want := fmt.Sprintf(`"listen": %d`, d.portMin)
	if !strings.Contains(string(raw), want) || !strings.Contains(string(raw), `"proxy_pass": "`+be.addr()+`"`) || raw[0] != '[' {
		t.Fatalf("/getstreams: %s", raw)
	}
	if _, m = d.api("GET", "/getfreeport", ""); m["port"] != float64(d.portMin+1) {
		t.Fatalf("/getfreeport after create: %v", m)
	}
	// The range is inclusive: its last port can be used.
	code, m = d.api("GET", fmt.Sprintf("/createstream/%d/%s", d.portMax, be.addr()), "")
	if code != 200 || m["result"] != "ok" {
		t.Fatalf("/createstream on the last port of the range: %d %v", code, m)
	}
	mustEcho(t, d.portMax, "S:")
	code, m = d.api("GET", fmt.Sprintf("/createstream/%d/bad;backend", d.portMin+1), "")
	if code != 400 || m["result"] != "error" {
		t.Fatalf("/createstream with a bad backend: %d %v", code, m)
	}
	code, m = d.api("GET", fmt.Sprintf("/removestream/%d", d.portMin), "")
	if code != 200 || m["result"] != "ok" {
		t.Fatalf("/removestream: %d %v", code, m)
	}
	waitRefused(t, d.portMin)
	if _, m = d.api("GET", fmt.Sprintf("/hasstream/%d", d.portMin), ""); m["result"] != "false" {
		t.Fatalf("/hasstream after remove: %v", m)
	}
}

func TestUDPStream(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	backend := startUDPEcho(t, "U:")
	d.mustPut("udp", d.portMin, `{"backend":"`+backend+`","idle_timeout":"5s"}`)
	c, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(d.portMin))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// UDP may drop a datagram; a few tries, each bounded.
	buf := make([]byte, 1024)
	for try := 0; try < 5; try++ {
		c.Write([]byte("datagram"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			if got := string(buf[:n]); got != "U:datagram" {
				t.Fatalf("udp reply %q", got)
			}
			return
		}
	}
	t.Fatal("no UDP reply through the stream")
}

func TestTwoBackendsAreBothReached(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	d.mustPut("tcp", d.portMin, `{"backends":["`+a.addr()+`","`+b.addr()+`"],"balance":"round_robin"}`)
	seen := map[string]int{}
	for i := 0; i < 20 && (seen["A:"] == 0 || seen["B:"] == 0); i++ {
		got, err := echo(t, d.portMin, "x\n")
		if err != nil {
			t.Fatal(err)
		}
		seen[strings.TrimSuffix(got, "x\n")]++
	}
	if seen["A:"] == 0 || seen["B:"] == 0 {
		t.Fatalf("backends reached: %v", seen)
	}
}

func TestProxyProtocolHeaderNamesTheClient(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEchoServer(t, "P:", true)
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`","proxy_protocol":true}`)
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMin))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "hi\n"); err != nil || got != "P:hi\n" {
		t.Fatalf("echo: %q %v", got, err)
	}
	_, clientPort, _ := net.SplitHostPort(c.LocalAddr().String())
	want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %s %d\r\n", clientPort, d.portMin)
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.headers) != 1 || be.headers[0] != want {
		t.Fatalf("PROXY headers %q, want [%q]", be.headers, want)
	}
}

func TestAllowCIDRRefusesOtherClients(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`","allow":["127.0.0.2/32"]}`)
	dialFrom := func(src string) (string, error) {
		dialer := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := dialer.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMin))
		if err != nil {
			return "", err
		}
		defer c.Close()
		return roundTrip(c, "knock\n")
	}
	if got, err := dialFrom("127.0.0.2"); err != nil || got != "A:knock\n" {
		t.Fatalf("allowed client: %q %v", got, err)
	}
	if got, err := dialFrom("127.0.0.1"); err == nil || strings.Contains(got, "knock") {
		t.Fatalf("client outside the allow list got %q, %v", got, err)
	}
}
