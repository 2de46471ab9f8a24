package integration

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rangeBackendAllow lets the streams (on 127.0.0.1) point at the same
// ports on 127.0.0.2, which the loop rule refuses unless BACKEND_ALLOW
// names that address exactly.
const rangeBackendAllow = "BACKEND_ALLOW=127.0.0.2/32,127.0.0.0/8"

// startPortEchoes listens on 127.0.0.2:first..last (the streams listen on
// 127.0.0.1, so the same port numbers are free there); every connection
// is answered with "port <its port>: " and each chunk it reads.
func startPortEchoes(t *testing.T, first, last int) {
	t.Helper()
	for port := first; port <= last; port++ {
		startEchoOn(t, "127.0.0.2:"+strconv.Itoa(port), fmt.Sprintf("port %d: ", port), false)
	}
}

// echoEveryPort sends bytes through every port first..last (8 at a time)
// and requires the reply of tag(port).
func echoEveryPort(t *testing.T, first, last int, tag func(port int) string) {
	t.Helper()
	var mu sync.Mutex
	var failed []string
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for port := first; port <= last; port++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			msg := fmt.Sprintf("ping %d %d\n", port, time.Now().UnixNano())
			got, err := echo(t, port, msg)
			if want := tag(port) + msg; err != nil || got != want {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("port %d: got %q, %v; want %q", port, got, err, want))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d ports did not forward:\n%s", len(failed), last-first+1, strings.Join(failed, "\n"))
	}
}

// errorOf is the code and message of an error answer.
func errorOf(m map[string]any) (code, msg string) {
	e, _ := m["error"].(map[string]any)
	code, _ = e["code"].(string)
	msg, _ = e["message"].(string)
	return code, msg
}

// A range of 100 ports with port_mode same: the bytes of every port reach
// the same port on the backend; a stream or range over its ports is a 409
// naming it and changes nothing; a range one of whose ports another
// process holds is a 409 naming that port, and the rest keeps working; a
// fixed range forwards every port to one backend port; a delete closes
// every port.
func TestRangesSamePortEndToEnd(t *testing.T) {
	d := startDaemon(t, 130, rangeBackendAllow)
	a, b := d.portMin, d.portMin+99
	startPortEchoes(t, a, b)
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d-%d", a, b), `{"backend":"127.0.0.2","port_mode":"same"}`)
	if code != 201 || m["range"] != fmt.Sprintf("%d-%d", a, b) || m["port_mode"] != "same" || m["status"].(map[string]any)["state"] != "active" {
		t.Fatalf("PUT the range: %d %v", code, m)
	}
	echoEveryPort(t, a, b, func(port int) string { return fmt.Sprintf("port %d: ", port) })

	// Inside the range: a GET names the range, writes are refused.
	inside := fmt.Sprintf("tcp/%d-%d", a, b)
	if code, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", a+50), ""); code != 404 || !strings.Contains(fmt.Sprint(m), fmt.Sprintf("port %d is part of stream %s", a+50, inside)) {
		t.Errorf("GET a port inside the range: %d %v", code, m)
	}
	_, before := d.apiRaw("GET", "/v1/streams", "")
	fixed := startEcho(t, "fixed ")
	for path, ports := range map[string]string{
		fmt.Sprintf("/v1/streams/tcp/%d", a+50):           fmt.Sprintf("port %d is", a+50),
		fmt.Sprintf("/v1/streams/tcp/%d-%d", a+90, a+110): fmt.Sprintf("ports %d-%d are", a+90, b),
		fmt.Sprintf("/v1/streams/tcp/%d", b):              fmt.Sprintf("port %d is", b),
	} {
		code, m := d.api("PUT", path, fmt.Sprintf(`{"backend":%q}`, fixed.addr()))
		c, msg := errorOf(m)
		if code != 409 || c != "port_conflict" || !strings.Contains(msg, ports+" taken by stream "+inside) {
			t.Errorf("PUT %s over the range: %d %v", path, code, m)
		}
	}
	_, after := d.apiRaw("GET", "/v1/streams", "")
	if string(after) != string(before) {
		t.Errorf("refused writes changed the list:\n%s\n%s", before, after)
	}
	// The range's own id with fewer ports is a change; growing back
	// probes the ports it adds, which nginx gave up.
	if code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d-%d", a, a+10), `{"backend":"127.0.0.2","port_mode":"same"}`); code != 200 {
		t.Fatalf("shrink the range: %d %v", code, m)
	}
	waitRefused(t, a+11)
	code, m = d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", a), "")
	if code != 200 || m["range"] != fmt.Sprintf("%d-%d", a, a+10) {
		t.Fatalf("the range shrunk by PUT: %d %v", code, m)
	}
	if code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d-%d", a, b), `{"backend":"127.0.0.2","port_mode":"same"}`); code != 200 {
		t.Fatalf("grow the range back: %d %v", code, m)
	}
	echoEveryPort(t, a, b, func(port int) string { return fmt.Sprintf("port %d: ", port) })

	// A fixed range: every port to one backend port.
	f1, f2 := b+1, b+10
	if code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d-%d", f1, f2), fmt.Sprintf(`{"backend":%q}`, fixed.addr())); code != 201 || m["port_mode"] != "fixed" {
		t.Fatalf("PUT a fixed range: %d %v", code, m)
	}
	echoEveryPort(t, f1, f2, func(int) string { return "fixed " })

	// One port of a range held by another process: 409 naming it.
	h1, h2 := b+11, b+20
	held, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(h1+4))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	code, m = d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d-%d", h1, h2), fmt.Sprintf(`{"backend":%q}`, fixed.addr()))
	if c, msg := errorOf(m); code != 409 || c != "port_in_use" || !strings.Contains(msg, fmt.Sprintf("bind() to 127.0.0.1:%d failed (98: Address already in use)", h1+4)) {
		t.Errorf("PUT a range with a held port: %d %v", code, m)
	}
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", h1), ""); code != 404 {
		t.Errorf("the refused range was stored: GET %d", code)
	}
	mustEcho(t, f1, "fixed ")
	mustEcho(t, a+77, fmt.Sprintf("port %d: ", a+77))

	// Delete: every port refused.
	if code, _ := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d-%d", a, b), ""); code != 204 {
		t.Fatalf("DELETE the range: %d", code)
	}
	for port := a; port <= b; port++ {
		waitRefused(t, port)
	}
	mustEcho(t, f2, "fixed ")
	if err := d.nginxTest(); err != nil {
		t.Errorf("nginx -t after the test: %v", err)
	}
}

// With 16 nginx masters a range lands on one of them and forwards too.
func TestRangesSharded(t *testing.T) {
	d := startDaemon(t, 40, "NGINX_SHARDS=16", rangeBackendAllow)
	a, b := d.portMin, d.portMin+29
	startPortEchoes(t, a, b)
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d-%d", a, b), `{"backend":"127.0.0.2","port_mode":"same"}`)
	if code != 201 || m["status"].(map[string]any)["state"] != "active" {
		t.Fatalf("PUT the range: %d %v", code, m)
	}
	echoEveryPort(t, a, b, func(port int) string { return fmt.Sprintf("port %d: ", port) })
	single := startEcho(t, "single ")
	d.mustPut("tcp", b+1, fmt.Sprintf(`{"backend":%q}`, single.addr()))
	mustEcho(t, b+1, "single ")
	if code, _ := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", a), ""); code != 204 {
		t.Fatalf("DELETE the range by its id: %d", code)
	}
	for port := a; port <= b; port++ {
		waitRefused(t, port)
	}
	mustEcho(t, b+1, "single ")
}

// A port of a range taken while the daemon and its nginx were down: at
// the start the range alone is failed, naming the port; the stream beside
// it forwards; once the port is free a resync applies the whole range.
func TestRangesHeldPortAtStartFailsTheRangeOnly(t *testing.T) {
	d := startDaemon(t, 30, rangeBackendAllow, "RESYNC_INTERVAL=1s")
	a, b := d.portMin, d.portMin+19
	startPortEchoes(t, a, b)
	if code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d-%d", a, b), `{"backend":"127.0.0.2","port_mode":"same"}`); code != 201 {
		t.Fatalf("PUT the range: %d %v", code, m)
	}
	single := startEcho(t, "single ")
	d.mustPut("tcp", b+1, fmt.Sprintf(`{"backend":%q}`, single.addr()))

	d.stop()
	d.stopNginx()
	waitRefused(t, a)
	squatter, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(a+7))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	d.start()
	want := fmt.Sprintf("bind() to 127.0.0.1:%d failed (98: Address already in use)", a+7)
	eventually(t, "the range failed naming its held port", 10*time.Second, func() bool {
		state, msg := d.streamState(a)
		return state == "failed" && strings.Contains(msg, want)
	})
	mustEcho(t, b+1, "single ")
	if state, msg := d.streamState(b + 1); state != "active" {
		t.Fatalf("the stream beside the range: %s %s", state, msg)
	}

	squatter.Close()
	eventually(t, "the range active once its port is free", 15*time.Second, func() bool {
		state, _ := d.streamState(a)
		return state == "active"
	})
	echoEveryPort(t, a, b, func(port int) string { return fmt.Sprintf("port %d: ", port) })
}

// A UDP range with port_mode same: a datagram to each port comes back
// from the backend's same port.
func TestRangesUDPSamePort(t *testing.T) {
	d := startDaemon(t, 6, rangeBackendAllow)
	a, b := d.portMin, d.portMin+4
	for port := a; port <= b; port++ {
		pc, err := net.ListenPacket("udp4", "127.0.0.2:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte(fmt.Sprintf("port %d: ", port)), buf[:n]...), from)
			}
		}()
	}
	if code, m := d.api("PUT", fmt.Sprintf("/v1/streams/udp/%d-%d", a, b), `{"backend":"127.0.0.2","port_mode":"same","idle_timeout":"5s"}`); code != 201 {
		t.Fatalf("PUT the udp range: %d %v", code, m)
	}
	for port := a; port <= b; port++ {
		c, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		want, got := fmt.Sprintf("port %d: datagram", port), ""
		buf := make([]byte, 2048)
		for try := 0; try < 5 && got != want; try++ { // UDP may drop one; bounded
			c.Write([]byte("datagram"))
			c.SetReadDeadline(time.Now().Add(time.Second))
			if n, err := c.Read(buf); err == nil {
				got = string(buf[:n])
			}
		}
		c.Close()
		if got != want {
			t.Fatalf("udp through port %d: %q, want %q", port, got, want)
		}
	}
}

// A range into the kernel's ephemeral ports is refused, with the sysctl
// that would reserve them; nothing is stored.
func TestRangesRefusedInEphemeralPorts(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	lo, _ := strconv.Atoi(f[0])
	d := newDaemon(t, 1)
	d.extraEnv = append(d.extraEnv, fmt.Sprintf("PORT_RANGE=%d-%d", d.portMin, lo+100))
	d.start()
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d-%d", lo-5, lo+5), `{"backend":"10.0.0.5:80"}`)
	if c, msg := errorOf(m); code != 400 || c != "invalid" || !strings.Contains(msg, "net.ipv4.ip_local_port_range") ||
		!strings.Contains(msg, "sysctl -w net.ipv4.ip_local_reserved_ports=") {
		t.Errorf("a range into the ephemeral ports: %d %v", code, m)
	}
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", lo-5), ""); code != 404 {
		t.Errorf("stored: GET %d", code)
	}
}
