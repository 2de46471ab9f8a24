package integration

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The scenarios of automatic bans (issue 16): real nginx, real sessions
// from scripted sources (127.0.0.3 is the attacker; 127.0.0.1 the host's
// own tools), real session log.

const attacker = "127.0.0.3"

// countingBackend is a TCP echo backend that counts the connections it
// accepted, so a test can tell that a refused client never reached it.
type countingBackend struct {
	ln       net.Listener
	accepted atomic.Int64
}

// startCountingBackend listens on 127.0.0.1:port and answers each read
// with "ok:" and the bytes read.
func startCountingBackend(t *testing.T, port int) *countingBackend {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("backend on %d: %v", port, err)
	}
	b := &countingBackend{ln: ln}
	t.Cleanup(func() { ln.Close() })
	acceptEach(ln, &b.accepted, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				c.Write(append([]byte("ok:"), buf[:n]...))
			}
			if err != nil {
				return
			}
		}
	})
	return b
}

// dialFrom connects from source address src to the stream on port.
func dialFrom(src string, port int) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
}

// echoFrom sends a line from src through the stream on port and returns
// what came back.
func echoFrom(src string, port int) (string, error) {
	c, err := dialFrom(src, port)
	if err != nil {
		return "", err
	}
	defer c.Close()
	msg := fmt.Sprintf("from %s %d\n", src, time.Now().UnixNano())
	got, err := roundTrip(c, msg)
	if err == nil && got != "ok:"+msg {
		err = fmt.Errorf("got %q", got)
	}
	return got, err
}

// closedAtOnce reports whether a session from src on port is closed by
// nginx without a byte back (over the stream's per-client limit: 503; or
// the source refused: 403), and waits for it to end, so that nginx has
// logged it.
func closedAtOnce(src string, port int) bool {
	c, err := dialFrom(src, port)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("hello\n"))
	n, err := c.Read(make([]byte, 64)) // a byte back: it got through
	var ne net.Error
	if n > 0 || errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return true
}

// failSessions makes n sessions from src that fail, one after another: the
// stream limits each client to one session (max_connections_per_client
// 1) and src holds one open meanwhile, so nginx refuses each with 503, as
// it does a client that opens connection after connection.
func failSessions(t *testing.T, src string, port, n int) {
	t.Helper()
	hold, err := holdSession(src, port)
	if err != nil {
		t.Fatalf("the session %s holds on %d: %v", src, port, err)
	}
	defer hold.Close()
	for i := range n {
		if !closedAtOnce(src, port) {
			t.Fatalf("session %d from %s to %d did not fail", i+1, src, port)
		}
	}
}

// holdSession opens a session from src through port and makes one round
// trip through it, so that nginx counts it against src's limit.
func holdSession(src string, port int) (net.Conn, error) {
	c, err := dialFrom(src, port)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := fmt.Sprintf("hold %s\n", src)
	if got, err := roundTrip(c, msg); err != nil || got != "ok:"+msg {
		c.Close()
		return nil, fmt.Errorf("no round trip: %q %v", got, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// limited is the part of a stream's body that makes a second session of
// a client fail (see failSessions).
const limited = `"max_connections_per_client":1`

// bansOf lists GET /v1/bans of stream id ("" for all) as "stream address".
func bansOf(t *testing.T, d *daemon, id string) []string {
	t.Helper()
	path := "/v1/bans"
	if id != "" {
		path += "?stream=" + id
	}
	code, m := d.api("GET", path, "")
	if code != 200 {
		t.Fatalf("GET %s: %d %v", path, code, m)
	}
	var out []string
	for _, b := range m["bans"].([]any) {
		b := b.(map[string]any)
		out = append(out, fmt.Sprintf("%s %s", b["stream"], b["address"]))
	}
	return out
}

// refusedNotForwarded requires that a session from src on port is closed
// at once and never reaches backend.
func refusedNotForwarded(t *testing.T, src string, port int, backend *countingBackend) {
	t.Helper()
	before := backend.accepted.Load()
	if !closedAtOnce(src, port) {
		t.Fatalf("%s got through to port %d", src, port)
	}
	if after := backend.accepted.Load(); after != before {
		t.Fatalf("a session from banned %s reached the backend", src)
	}
}

// A source whose sessions keep failing is banned: refused at once,
// without reaching the backend, while 127.0.0.1 gets through; the ban is
// listed, announced, and ends by itself after its time.
func TestBansBanAFailingSourceUntilItsTimeIsUp(t *testing.T) {
	d := startDaemon(t, 2)
	events := watchEvents(t, d, "types=ban.added,ban.lifted")
	bport := reservePorts(t, 1)
	backend := startCountingBackend(t, bport)
	port := d.portMin
	d.mustPut("tcp", port, fmt.Sprintf(`{"backend":"127.0.0.1:%d",%s,"ban":{"after":3,"within":"1m","for":"4s"}}`, bport, limited))
	id := fmt.Sprintf("tcp/%d", port)

	failSessions(t, attacker, port, 3)
	added := events.wait(0, "ban.added", "ban.added", 10*time.Second, func(m map[string]any) bool {
		return m["address"] == attacker && m["stream"] == id
	})
	if got := bansOf(t, d, id); len(got) != 1 || got[0] != id+" "+attacker {
		t.Fatalf("GET /v1/bans = %v", got)
	}
	requireBanAudited(t, d, id, attacker)

	eventually(t, "the ban is applied", 5*time.Second, func() bool { return closedAtOnce(attacker, port) })
	refusedNotForwarded(t, attacker, port, backend)
	if _, err := echoFrom("127.0.0.1", port); err != nil {
		t.Fatalf("127.0.0.1 refused: %v", err)
	}

	eventually(t, "the ban ends after its 4s", 15*time.Second, func() bool { _, err := echoFrom(attacker, port); return err == nil })
	lifted := events.wait(added.ID, "ban.lifted", "ban.lifted", 5*time.Second, func(m map[string]any) bool { return m["address"] == attacker })
	if lifted.Data["reason"] != "expired" {
		t.Errorf("lifted: %v", lifted.Data)
	}
	if got := bansOf(t, d, ""); len(got) != 0 {
		t.Errorf("still listed: %v", got)
	}
}

// A ban is kept across a restart of the daemon (listed, and still
// applied once the restarted daemon has passed), and lifted through the
// API: the answer comes once bytes flow again. 127.0.0.1 and addresses
// in a stream's allow list are never banned.
func TestBansKeptAcrossRestartLiftedByAPINeverLoopbackOrAllowed(t *testing.T) {
	d := startDaemon(t, 2)
	bport := reservePorts(t, 1)
	port, allowed := d.portMin, d.portMin+1
	backend := startCountingBackend(t, bport)
	ban := limited + `,"ban":{"after":3,"within":"1m","for":"1h"}`
	d.mustPut("tcp", port, fmt.Sprintf(`{"backend":"127.0.0.1:%d",%s}`, bport, ban))
	d.mustPut("tcp", allowed, fmt.Sprintf(`{"backend":"127.0.0.1:%d","allow":["127.0.0.1","127.0.0.3"],%s}`, bport, ban))
	id := fmt.Sprintf("tcp/%d", port)

	// Failures of 127.0.0.1, and of an allowed address, first: the ban
	// of the attacker that follows proves they were all read.
	failSessions(t, "127.0.0.1", port, 6)
	failSessions(t, attacker, allowed, 6)
	failSessions(t, attacker, port, 3)
	eventually(t, "the attacker is banned", 10*time.Second, func() bool { return len(bansOf(t, d, "")) > 0 })
	if got := bansOf(t, d, ""); len(got) != 1 || got[0] != id+" "+attacker {
		t.Fatalf("bans = %v; want only %s on %s", got, attacker, id)
	}
	eventually(t, "the ban is applied", 5*time.Second, func() bool { return closedAtOnce(attacker, port) })
	if _, err := echoFrom(attacker, allowed); err != nil {
		t.Fatalf("allowed %s refused on %d: %v", attacker, allowed, err)
	}

	d.stop()
	d.start() // ready: its first pass applied what it loaded
	if got := bansOf(t, d, id); len(got) != 1 {
		t.Fatalf("after a restart, bans = %v", got)
	}
	refusedNotForwarded(t, attacker, port, backend)
	if _, err := echoFrom("127.0.0.1", port); err != nil {
		t.Fatalf("127.0.0.1 after the restart: %v", err)
	}

	// Dry runs change nothing: a lift's, and a PUT's without the policy,
	// whose preview shows the deny line going.
	if code, m := d.api("DELETE", "/v1/bans/"+id+"/"+attacker+"?dry_run=true", ""); code != 200 || m["dry_run"] != true {
		t.Fatalf("DELETE dry run: %d %v", code, m)
	}
	code, m := d.api("PUT", "/v1/streams/"+id+"?dry_run=true", fmt.Sprintf(`{"backend":"127.0.0.1:%d"}`, bport))
	if diff, _ := m["diff"].(string); code != 200 || !strings.Contains(diff, "-    deny "+attacker+";") {
		t.Fatalf("PUT dry run without the policy: %d %v; want the deny line removed in the diff", code, m)
	}
	if got := bansOf(t, d, id); len(got) != 1 {
		t.Fatalf("after dry runs, bans = %v", got)
	}
	refusedNotForwarded(t, attacker, port, backend)

	code, m = d.api("DELETE", "/v1/bans/"+id+"/"+attacker, "")
	if code != 200 || m["applied"] != true {
		t.Fatalf("DELETE: %d %v", code, m)
	}
	if _, err := echoFrom(attacker, port); err != nil {
		t.Fatalf("lifted, but %s is still refused: %v", attacker, err)
	}
	if code, _ := d.api("DELETE", "/v1/bans/"+id+"/"+attacker, ""); code != 404 {
		t.Errorf("second DELETE: %d", code)
	}
	if got := bansOf(t, d, ""); len(got) != 0 {
		t.Errorf("still listed: %v", got)
	}
}

// Fifty sources failing at once make fifty bans in a handful of reloads,
// not fifty; each is refused, and the metrics count them. Each source
// keeps failing until it is banned, as an attacker does: nginx sends its
// session log over a Unix datagram socket, and a burst of more lines than
// net.unix.max_dgram_qlen (10 by default) loses some ("send() to syslog
// failed" in nginx's log), which only delays a ban.
func TestBansManySourcesFewReloads(t *testing.T) {
	d := startDaemon(t, 1)
	bport := reservePorts(t, 1)
	port := d.portMin
	backend := startCountingBackend(t, bport)
	d.mustPut("tcp", port, fmt.Sprintf(`{"backend":"127.0.0.1:%d",%s,"ban":{"after":3,"within":"1m","for":"1h"}}`, bport, limited))
	before := d.counters()["nginx_reloads"]

	const sources = 50
	banned := func() map[string]bool {
		out := map[string]bool{}
		for _, b := range bansOf(t, d, "") {
			out[strings.Fields(b)[1]] = true
		}
		return out
	}
	start := time.Now()
	for round := 0; len(banned()) < sources; round++ {
		if round == 30 || time.Since(start) > 60*time.Second {
			t.Fatalf("%d of %d sources banned after %d rounds", len(banned()), sources, round)
		}
		done := banned()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i := 1; i <= sources; i++ {
			src := fmt.Sprintf("127.0.1.%d", i)
			if done[src] {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				if hold, err := holdSession(src, port); err == nil { // not banned yet
					defer hold.Close()
				}
				closedAtOnce(src, port)
			}()
		}
		wg.Wait()
	}
	t.Logf("%d sources banned in %v", sources, time.Since(start).Round(time.Millisecond))
	refused := map[int]bool{}
	eventually(t, "every ban applied", 10*time.Second, func() bool {
		for i := 1; i <= sources; i++ {
			if !refused[i] && closedAtOnce(fmt.Sprintf("127.0.1.%d", i), port) {
				refused[i] = true
			}
		}
		return len(refused) == sources
	})
	reloads := d.counters()["nginx_reloads"] - before
	t.Logf("%d bans took %v reloads", sources, reloads)
	if reloads < 1 || reloads > 20 {
		t.Fatalf("%v reloads for %d bans: want a handful", reloads, sources)
	}
	refusedNotForwarded(t, "127.0.1.6", port, backend)
	if _, err := echoFrom("127.0.0.1", port); err != nil {
		t.Fatalf("127.0.0.1: %v", err)
	}
	code, raw := d.apiRaw("GET", "/metrics", "")
	if code != 200 || !strings.Contains(string(raw), "stream_conductor_bans 50\n") || !strings.Contains(string(raw), "stream_conductor_bans_total 50\n") {
		t.Errorf("metrics: %d\n%s", code, grepLines(string(raw), "stream_conductor_bans"))
	}
	code, m := d.api("DELETE", fmt.Sprintf("/v1/bans/tcp/%d", port), "")
	if code != 200 || len(m["lifted"].([]any)) != sources {
		t.Fatalf("lift all: %d %v", code, m)
	}
	if _, err := echoFrom("127.0.1.7", port); err != nil {
		t.Fatalf("after lifting all: %v", err)
	}
}

// requireBanAudited requires an audit entry of the daemon (no token, no
// request) that banned addr from stream id.
func requireBanAudited(t *testing.T, d *daemon, id, addr string) {
	t.Helper()
	_, m := d.api("GET", "/v1/audit", "")
	for _, e := range m["entries"].([]any) {
		e := e.(map[string]any)
		if e["route"] == "ban" && e["stream"] == id && e["token"] == "" && e["method"] == "" &&
			strings.HasPrefix(e["result"].(string), "banned "+addr+" until ") {
			return
		}
	}
	t.Fatalf("no audit entry of the ban of %s from %s: %v", addr, id, m["entries"])
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Clients retrying through a backend's outage (502), or refused by a
// stream-wide limit another client fills (503 without a per-client
// limit), are not attackers: they are never banned.
func TestBansNeverForTheBackendsOrAnotherClientsDoing(t *testing.T) {
	d := startDaemon(t, 2)
	down, full := d.portMin, d.portMin+1
	ports := reservePorts(t, 2) // nothing listens on the first: sessions to down fail with 502
	startCountingBackend(t, ports+1)
	ban := `"ban":{"after":3,"within":"1m","for":"1h"}`
	d.mustPut("tcp", down, fmt.Sprintf(`{"backend":"127.0.0.1:%d",%s}`, ports, ban))
	d.mustPut("tcp", full, fmt.Sprintf(`{"backend":"127.0.0.1:%d","max_connections":1,%s}`, ports+1, ban))

	hold, err := holdSession("127.0.0.5", full) // fills the stream
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	for range 6 {
		if !closedAtOnce(attacker, down) || !closedAtOnce(attacker, full) {
			t.Fatal("a session that should fail got through")
		}
	}
	// Every session is read (counted in traffic) before the check.
	for _, port := range []int{down, full} {
		eventually(t, fmt.Sprintf("the sessions on %d counted", port), 10*time.Second, func() bool {
			_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", port), "")
			tr, _ := m["traffic"].(map[string]any)
			n, _ := tr["sessions"].(float64)
			return n >= 6
		})
	}
	if got := bansOf(t, d, ""); len(got) != 0 {
		t.Fatalf("bans %v: a backend's outage or a full stream banned a client", got)
	}
}
