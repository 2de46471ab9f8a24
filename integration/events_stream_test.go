package integration

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A client that reconnects with Last-Event-ID gets what happened while it
// was away, in order; after a restart of the daemon its old id brings a
// reset (list again), never this run's events as if they followed it.
func TestEventsResumeWithLastEventID(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 4)
	e := startEcho(t, "resume")
	first, second := fmt.Sprintf("tcp/%d", d.portMin), fmt.Sprintf("tcp/%d", d.portMin+1)
	body := `{"backend":"` + e.addr() + `"}`

	r := watchEvents(t, d, "")
	d.mustPut("tcp", d.portMin, body)
	r.wait(0, first+" created", "stream.created", 10*time.Second, isStream(first))
	seen := r.wait(0, first+" active", "stream.status", 10*time.Second, statusIs(first, "active"))
	r.close()

	// While the client is away.
	d.mustPut("tcp", d.portMin+1, body)
	if code, m := d.api("DELETE", "/v1/streams/"+first, ""); code != 200 && code != 204 {
		t.Fatalf("DELETE %s: %d %v", first, code, m)
	}

	r2 := watchEventsWith(t, d, "", map[string]string{"Last-Event-ID": strconv.FormatUint(seen.ID, 10)})
	created := r2.wait(0, second+" created", "stream.created", 10*time.Second, isStream(second))
	deleted := r2.wait(0, first+" deleted", "stream.deleted", 10*time.Second, isStream(first))
	got := r2.all()
	if got[0].Type == "reset" || got[0].ID != seen.ID+1 {
		t.Fatalf("resumed after %d, the first event is %s #%d; want #%d:\n%s", seen.ID, got[0].Type, got[0].ID, seen.ID+1, r2.summary())
	}
	if created.ID > deleted.ID {
		t.Errorf("%s created as #%d after %s deleted as #%d; want the order they happened in", second, created.ID, first, deleted.ID)
	}
	for i := 1; i < len(got); i++ {
		if got[i].ID != got[i-1].ID+1 {
			t.Fatalf("events #%d then #%d: a gap in what a client with no filter gets:\n%s", got[i-1].ID, got[i].ID, r2.summary())
		}
	}
	if spec, _ := deleted.Data["spec"].(map[string]any); spec == nil || spec["listen"] != float64(d.portMin) {
		t.Errorf("stream.deleted carries spec %v; want the stream as it was", deleted.Data["spec"])
	}
	last := got[len(got)-1].ID
	r2.close()

	d.stop()
	d.start()
	r3 := watchEventsWith(t, d, "", map[string]string{"Last-Event-ID": strconv.FormatUint(last, 10)})
	eventually(t, "the first event after a restart", 10*time.Second, func() bool { return len(r3.all()) > 0 })
	reset := r3.all()[0]
	if reset.Type != "reset" || !strings.Contains(reset.Raw, "list again") {
		t.Fatalf("after a restart, resuming from #%d brought %s %s; want a reset", last, reset.Type, reset.Raw)
	}
	if reset.ID <= last {
		t.Errorf("the reset's id #%d is not after the earlier run's #%d", reset.ID, last)
	}
}

// 100 clients watch at once; each gets the same events with the same ids,
// and each is let go when it leaves.
func TestEventsHundredWatchers(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	e := startEcho(t, "many")
	id := fmt.Sprintf("tcp/%d", d.portMin)
	const n = 100
	readers := make([]*sseReader, n)
	for i := range readers {
		readers[i] = watchEvents(t, d, "types=stream.created,stream.status")
	}
	eventually(t, "100 subscribers in /v1/status", 10*time.Second, func() bool { return subscribers(t, d) == n })
	d.mustPut("tcp", d.portMin, `{"backend":"`+e.addr()+`"}`)
	var want []uint64
	for i, r := range readers {
		c := r.wait(0, "created", "stream.created", 15*time.Second, isStream(id))
		a := r.wait(0, "active", "stream.status", 15*time.Second, statusIs(id, "active"))
		if i == 0 {
			want = []uint64{c.ID, a.ID}
		} else if c.ID != want[0] || a.ID != want[1] {
			t.Fatalf("watcher %d got #%d and #%d, watcher 0 #%d and #%d", i, c.ID, a.ID, want[0], want[1])
		}
		for _, ev := range r.all() {
			if ev.Type != "stream.created" && ev.Type != "stream.status" {
				t.Fatalf("watcher %d asked for stream.created,stream.status and got %s", i, ev.Type)
			}
		}
	}
	for _, r := range readers {
		r.close()
	}
	eventually(t, "0 subscribers once they left", 10*time.Second, func() bool { return subscribers(t, d) == 0 })
}

// A client that never reads is dropped once its bounded buffer is full;
// a client that reads gets every event meanwhile, without a gap, and the
// daemon logs why the other one went.
func TestEventsClientThatNeverReadsIsDropped(t *testing.T) {
	t.Parallel()
	const streams = 60 // under the bulk threshold: one event each
	d := startDaemon(t, streams)
	e := startEcho(t, "flood")

	stuck, err := net.DialTCP("tcp", nil, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: d.apiPort})
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	stuck.SetReadBuffer(4096)
	fmt.Fprintf(stuck, "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", d.apiPort)
	eventually(t, "the stuck client subscribed", 10*time.Second, func() bool { return subscribers(t, d) == 1 })
	reader := watchEvents(t, d, "")

	var all []string
	for i := range streams {
		all = append(all, fmt.Sprintf(`{"protocol":"tcp","listen":%d,"backends":["%s"],"description":"%s"}`, d.portMin+i, e.addr(), strings.Repeat("x", 200)))
	}
	withAll := `{"streams":[` + strings.Join(all, ",") + `]}`
	dropped := func() bool {
		_, m := d.api("GET", "/v1/status", "")
		ev, _ := m["events"].(map[string]any)
		return ev != nil && ev["dropped_subscribers"] == float64(1)
	}
	for round := 0; round < 20 && !dropped(); round++ {
		for _, body := range []string{withAll, `{"streams":[]}`} {
			if code, m := d.api("POST", "/v1/import?prune=true", body); code != 200 {
				t.Fatalf("import round %d: %d %v", round, code, m)
			}
		}
	}
	if !dropped() {
		t.Fatal("20 rounds of imports, and the client that never reads is still a subscriber")
	}
	if n := subscribers(t, d); n != 1 {
		t.Fatalf("%d subscribers after the drop; want the reader alone", n)
	}
	eventually(t, "the drop in the daemon's log", 30*time.Second, func() bool {
		return strings.Contains(d.logs.String(), "events client dropped")
	})
	got := reader.all()
	if len(got) < 2*eventsBufferFloor {
		t.Fatalf("the reader got %d events; want at least %d", len(got), 2*eventsBufferFloor)
	}
	for i := 1; i < len(got); i++ {
		if got[i].ID != got[i-1].ID+1 {
			t.Fatalf("the reader got #%d then #%d: it was slowed or dropped too", got[i-1].ID, got[i].ID)
		}
	}
}

// eventsBufferFloor is the events a client may leave unread (httpapi).
const eventsBufferFloor = 256

// subscribers is events.subscribers in /v1/status.
func subscribers(t *testing.T, d *daemon) int {
	t.Helper()
	_, m := d.api("GET", "/v1/status", "")
	ev, _ := m["events"].(map[string]any)
	if ev == nil {
		t.Fatalf("/v1/status has no events: %v", m)
	}
	return int(ev["subscribers"].(float64))
}

// A read token is enough to follow the events; no token is not.
func TestEventsNeedOnlyAReadToken(t *testing.T) {
	t.Parallel()
	const writeTok, readTok = "events-test-write-token-0123456789", "events-test-read-token-0123456789"
	d := newDaemonWithTokens(t, 2, writeTok, readTok)
	d.start()
	e := startEcho(t, "tok")

	resp, err := http.Get(d.url("/v1/events"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/events without a token: %d, want 401", resp.StatusCode)
	}
	r := watchEventsWith(t, d, "types=stream.status", map[string]string{"Authorization": "Bearer " + readTok})
	id := fmt.Sprintf("tcp/%d", d.portMin)
	d.mustPut("tcp", d.portMin, `{"backend":"`+e.addr()+`"}`)
	r.wait(0, id+" active, seen with the read token", "stream.status", 10*time.Second, statusIs(id, "active"))
}
