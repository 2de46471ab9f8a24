package integration

import (
	be16 "encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests give the daemon (and its nginx) a DNS server of their own:
// a small UDP server in the test process on port 53 of a loopback address
// of its own, named by a private /etc/resolv.conf bind-mounted in a mount
// namespace. The server answers A records the test sets, fails (SERVFAIL,
// NXDOMAIN) or never answers.

// requireDNSRoot: the fake DNS server binds port 53 and the daemon runs
// with a private /etc/resolv.conf.
func requireDNSRoot(t *testing.T) {
	t.Helper()
	requireTool(t, "unshare")
	requireRoot(t, "for port 53 and a private /etc/resolv.conf")
}

// DNS behaviours of a name on the fake server.
const (
	dnsAnswer   = "answer"   // A records (AAAA: none)
	dnsHang     = "hang"     // no reply at all
	dnsServfail = "servfail" // SERVFAIL
)

type dnsRecord struct {
	mode  string
	addrs []netip.Addr
}

// fakeDNS is an authoritative server for the names a test sets; any other
// name is NXDOMAIN.
type fakeDNS struct {
	ip      string
	pc      net.PacketConn
	mu      sync.Mutex
	names   map[string]dnsRecord
	queries map[string]int
}

// startFakeDNS listens on port 53 of a loopback address no other test
// uses.
func startFakeDNS(t *testing.T) *fakeDNS {
	t.Helper()
	f := &fakeDNS{names: map[string]dnsRecord{}, queries: map[string]int{}}
	for tries := 0; tries < 50 && f.pc == nil; tries++ {
		ip := fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(150), rand.IntN(256), 1+rand.IntN(254))
		if pc, err := net.ListenPacket("udp4", ip+":53"); err == nil {
			f.ip, f.pc = ip, pc
		}
	}
	if f.pc == nil {
		t.Fatal("no loopback address free for a DNS server on port 53")
	}
	t.Cleanup(func() { f.pc.Close() })
	go f.serve()
	return f
}

// set makes name behave as mode, answering addrs.
func (f *fakeDNS) set(name, mode string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := dnsRecord{mode: mode}
	for _, a := range addrs {
		r.addrs = append(r.addrs, netip.MustParseAddr(a))
	}
	f.names[name] = r
}

// count is how many queries for name the server received.
func (f *fakeDNS) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[name]
}

func (f *fakeDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := f.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if reply := f.reply(buf[:n]); reply != nil {
			f.pc.WriteTo(reply, from)
		}
	}
}

// reply builds the answer to query q, or nil for none.
func (f *fakeDNS) reply(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if l&0xc0 != 0 || i+1+l > len(q) {
			return nil
		}
		labels = append(labels, strings.ToLower(string(q[i+1:i+1+l])))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	question := q[12 : i+5]
	qtype := be16.BigEndian.Uint16(q[i+1:])
	name := strings.Join(labels, ".")
	f.mu.Lock()
	f.queries[name]++
	rec, known := f.names[name]
	f.mu.Unlock()
	rcode := byte(0)
	var answers []netip.Addr
	switch {
	case !known:
		rcode = 3 // NXDOMAIN
	case rec.mode == dnsHang:
		return nil
	case rec.mode == dnsServfail:
		rcode = 2
	case qtype == 1: // A
		answers = rec.addrs
	}
	out := make([]byte, 12, 512)
	copy(out, q[:2])
	out[2] = 0x84 | q[2]&0x01 // response, authoritative, RD copied
	out[3] = 0x80 | rcode     // recursion available
	be16.BigEndian.PutUint16(out[4:], 1)
	be16.BigEndian.PutUint16(out[6:], uint16(len(answers)))
	out = append(out, question...)
	for _, a := range answers {
		b := a.As4()
		out = append(out, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4)
		out = append(out, b[:]...)
	}
	return out
}

// useFakeDNS runs d in a mount namespace whose /etc/resolv.conf names f.
func useFakeDNS(t *testing.T, d *daemon, f *fakeDNS) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver "+f.ip+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.wrap = []string{"unshare", "-m", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$1"`, conf}
}

// startEchoAt starts an echo backend on ip:port.
func startEchoAt(t *testing.T, ip string, port int, tag string) (*echoServer, error) {
	t.Helper()
	ln, err := net.Listen("tcp4", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	e := &echoServer{ln: ln, tag: tag}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go e.serve(c)
		}
	}()
	return e, nil
}

// echoPair starts two echo backends on the same port of two loopback
// addresses, and returns that port.
func echoPair(t *testing.T, ipA, tagA, ipB, tagB string) int {
	t.Helper()
	for tries := 0; tries < 20; tries++ {
		a, err := startEchoAt(t, ipA, 0, tagA)
		if err != nil {
			t.Fatal(err)
		}
		_, p, _ := net.SplitHostPort(a.addr())
		port, _ := strconv.Atoi(p)
		if _, err := startEchoAt(t, ipB, port, tagB); err == nil {
			return port
		}
		a.ln.Close()
	}
	t.Fatal("no port free on both addresses")
	return 0
}

// streamState returns a stream's status.
func (d *daemon) streamState(port int) (string, string) {
	d.t.Helper()
	_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", port), "")
	st, _ := m["status"].(map[string]any)
	e, _ := st["error"].(string)
	s, _ := st["state"].(string)
	return s, e
}

// streamFile returns the stream's nginx file, "" if there is none.
func (d *daemon) streamFile(port int) string {
	b, _ := os.ReadFile(filepath.Join(d.dataDir, "stream.d", fmt.Sprintf("stream-tcp-%d.conf", port)))
	return string(b)
}

// A backend name whose lookup never answers: its PUT is refused within
// RESOLVE_TIMEOUT with a message saying so, and it wedges nothing: other
// writes apply and forward, a DELETE closes its port, /readyz stays 200.
func TestDNSHangingBackendNameDoesNotWedgeWrites(t *testing.T) {
	t.Parallel()
	requireDNSRoot(t)
	dns := startFakeDNS(t)
	dns.set("hang.test", dnsHang)
	d := newDaemon(t, 4, "RESOLVE_TIMEOUT=2s")
	useFakeDNS(t, d, dns)
	d.start()
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin+2, `{"backend":"`+be.addr()+`"}`)

	type answer struct {
		code int
		m    map[string]any
		took time.Duration
	}
	done := make(chan answer, 1)
	start := time.Now()
	go func() {
		code, raw := d.apiRaw("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), `{"backend":"hang.test:80"}`)
		var a answer
		a.code, a.took = code, time.Since(start)
		a.m = map[string]any{"raw": string(raw)}
		done <- a
	}()
	eventually(t, "the daemon asks the DNS server for hang.test", 5*time.Second, func() bool { return dns.count("hang.test") > 0 })

	// Meanwhile, an unrelated write applies at once.
	t0 := time.Now()
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
	if took := time.Since(t0); took > 1500*time.Millisecond {
		t.Errorf("an unrelated PUT took %v while a name hung", took)
	}
	mustEcho(t, d.portMin+1, "A:")

	a := <-done
	raw := a.m["raw"].(string)
	if a.code != 422 || !strings.Contains(raw, `host not found in upstream \"hang.test\"`) || !strings.Contains(raw, "timed out after 2s") {
		t.Fatalf("PUT of a hanging name: %d %s", a.code, raw)
	}
	if a.took > 2*time.Second+1500*time.Millisecond {
		t.Errorf("PUT of a hanging name answered after %v (RESOLVE_TIMEOUT 2s)", a.took)
	}
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), ""); code != 404 {
		t.Fatalf("the refused stream is stored: GET %d", code)
	}

	// And afterwards nothing is stuck.
	d.mustPut("tcp", d.portMin+3, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMin+3, "A:")
	if code, m := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+2), ""); code != 204 {
		t.Fatalf("DELETE while a name hangs: %d %v", code, m)
	}
	waitRefused(t, d.portMin+2)
	if code, m := d.api("GET", "/readyz", ""); code != 200 {
		t.Fatalf("/readyz while a name hangs: %d %v", code, m)
	}
	mustEcho(t, d.portMin+1, "A:")
}

// A short DNS outage (SERVFAIL, then no answer) during unrelated writes
// takes no working stream down: its file stays, it keeps forwarding.
func TestDNSOutageKeepsNamedStreamForwarding(t *testing.T) {
	t.Parallel()
	requireDNSRoot(t)
	dns := startFakeDNS(t)
	d := newDaemon(t, 4, "RESOLVE_INTERVAL=1s", "RESOLVE_TIMEOUT=1s")
	useFakeDNS(t, d, dns)
	d.start()
	be := startEcho(t, "A:")
	host, port, _ := net.SplitHostPort(be.addr())
	dns.set("svc.test", dnsAnswer, host)
	d.mustPut("tcp", d.portMin, `{"backend":"svc.test:`+port+`"}`)
	mustEcho(t, d.portMin, "A:")
	file := d.streamFile(d.portMin)

	check := func(mode string, port int) {
		t.Helper()
		d.mustPut("tcp", port, `{"backend":"`+be.addr()+`"}`)
		mustEcho(t, d.portMin, "A:")
		if got := d.streamFile(d.portMin); got != file {
			t.Fatalf("during a DNS outage (%s) the named stream's file changed:\n%s\nwas:\n%s", mode, got, file)
		}
		if st, e := d.streamState(d.portMin); st != "active" {
			t.Fatalf("during a DNS outage (%s) the named stream is %s: %s", mode, st, e)
		}
	}
	dns.set("svc.test", dnsServfail)
	check(dnsServfail, d.portMin+1)
	// Once the schedule has looked the name up during the outage (and
	// failed), the last good answer still holds.
	dns.set("svc.test", dnsHang)
	seen := dns.count("svc.test")
	eventually(t, "the schedule looks svc.test up during the outage", 10*time.Second, func() bool { return dns.count("svc.test") > seen })
	check(dnsHang, d.portMin+2)
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`","description":"again"}`)
	mustEcho(t, d.portMin, "A:")
	dns.set("svc.test", dnsAnswer, host)
	mustEcho(t, d.portMin, "A:")
}

// Host names that glibc reads as numbers (and nginx would resolve to
// loopback or the metadata address) are refused as invalid; nothing
// changes.
func TestNumericHostSpellingsAreRefused(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	api, first := strconv.Itoa(d.apiPort), strconv.Itoa(d.portMin)
	for _, b := range []string{
		"0x7f000001:" + api, "0x7f.0x1:" + api, "127.0.0.0x1:" + first, "0x0:" + api, "0xa9fea9fe:80",
		"127.1:" + api, "2130706433:" + api, "0177.0.0.1:" + api, "0X7F000001:" + api,
	} {
		for _, req := range []struct{ method, path string }{
			{"PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+1)},
			{"PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin)},
			{"POST", "/v1/streams"},
		} {
			code, m := d.api(req.method, req.path, `{"backend":"`+b+`"}`)
			e, _ := m["error"].(map[string]any)
			if code != 400 || e["code"] != "invalid" || e["field"] != "backends" {
				t.Fatalf("%s %s with backend %s: %d %v", req.method, req.path, b, code, m)
			}
		}
	}
	_, m := d.api("GET", "/v1/streams", "")
	if streams := m["streams"].([]any); len(streams) != 1 || streams[0].(map[string]any)["backends"].([]any)[0] != be.addr() {
		t.Fatalf("streams after the refusals: %v", streams)
	}
	entries, _ := os.ReadDir(filepath.Join(d.dataDir, "stream.d"))
	if len(entries) != 1 {
		t.Fatalf("files after the refusals: %v", entries)
	}
	mustEcho(t, d.portMin, "A:")
}

// DNS rebinding: a name allowed by BACKEND_ALLOW when written, that later
// resolves outside it, is never rendered to the new address and never
// forwards there: the stream fails with the rule, keeping the last good
// address, and comes back when the name does.
func TestDNSRebindingIsNotFollowed(t *testing.T) {
	t.Parallel()
	requireDNSRoot(t)
	dns := startFakeDNS(t)
	port := echoPair(t, "127.0.0.2", "GOOD:", "127.0.0.1", "EVIL:")
	p := strconv.Itoa(port)
	d := newDaemon(t, 3, "BACKEND_ALLOW=127.0.0.2/32", "RESOLVE_INTERVAL=1s")
	useFakeDNS(t, d, dns)
	d.start()
	dns.set("rb.test", dnsAnswer, "127.0.0.2")
	d.mustPut("tcp", d.portMin, `{"backend":"rb.test:`+p+`"}`)
	mustEcho(t, d.portMin, "GOOD:")

	dns.set("rb.test", dnsAnswer, "127.0.0.1")
	// A write forces a reload, which is when nginx used to resolve again.
	d.mustPut("tcp", d.portMin+1, `{"backend":"127.0.0.2:`+p+`"}`)
	eventually(t, "the rebound stream failed by BACKEND_ALLOW", 10*time.Second, func() bool {
		st, e := d.streamState(d.portMin)
		return st == "failed" && strings.Contains(e, "rule: BACKEND_ALLOW") && strings.Contains(e, "127.0.0.1")
	})
	for i := 0; i < 5; i++ {
		msg := fmt.Sprintf("probe %d\n", i)
		got, err := echo(t, d.portMin, msg)
		if strings.HasPrefix(got, "EVIL:") {
			t.Fatalf("a connection through the rebound stream reached the forbidden address: %q", got)
		}
		if err != nil || got != "GOOD:"+msg {
			t.Fatalf("the rebound stream keeps its last good address: got %q, %v", got, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(d.dataDir, "stream.d"))
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(d.dataDir, "stream.d", e.Name()))
		if strings.Contains(string(b), "127.0.0.1:"+p) {
			t.Fatalf("%s names the forbidden address:\n%s", e.Name(), b)
		}
	}

	dns.set("rb.test", dnsAnswer, "127.0.0.2")
	eventually(t, "the stream active again once its name is back", 10*time.Second, func() bool {
		st, _ := d.streamState(d.portMin)
		return st == "active"
	})
	mustEcho(t, d.portMin, "GOOD:")
}

// A backend whose name moves to another address is followed within a few
// RESOLVE_INTERVALs, without any API call.
func TestBackendThatMovesIsFollowed(t *testing.T) {
	t.Parallel()
	requireDNSRoot(t)
	dns := startFakeDNS(t)
	port := echoPair(t, "127.0.0.2", "A:", "127.0.0.3", "B:")
	d := newDaemon(t, 2, "RESOLVE_INTERVAL=1s")
	useFakeDNS(t, d, dns)
	d.start()
	dns.set("mv.test", dnsAnswer, "127.0.0.2")
	d.mustPut("tcp", d.portMin, `{"backend":"mv.test:`+strconv.Itoa(port)+`"}`)
	mustEcho(t, d.portMin, "A:")

	dns.set("mv.test", dnsAnswer, "127.0.0.3")
	eventually(t, "new connections reach the name's new address", 10*time.Second, func() bool {
		msg := "where\n"
		got, err := echo(t, d.portMin, msg)
		return err == nil && got == "B:"+msg
	})
	if st, e := d.streamState(d.portMin); st != "active" {
		t.Fatalf("moved stream is %s: %s", st, e)
	}
}
