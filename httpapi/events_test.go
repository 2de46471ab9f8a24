package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/events"
)

// sseFrame is one server-sent event, or a comment.
type sseFrame struct {
	id, event, data, comment string
}

// sseClient reads GET /v1/events from a real server.
type sseClient struct {
	t    *testing.T
	resp *http.Response
	r    *bufio.Reader
}

func openEvents(t *testing.T, base, query string, header map[string]string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseClient{t: t, resp: resp, r: bufio.NewReader(resp.Body)}
}

// next reads the next frame (the request's context bounds the wait).
func (c *sseClient) next() sseFrame {
	c.t.Helper()
	var f sseFrame
	for range 1000 {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading events: %v (so far %+v)", err, f)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if f != (sseFrame{}) {
				return f
			}
		case strings.HasPrefix(line, ":"):
			f.comment = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "id: "):
			f.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			f.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			f.data = line[6:]
		}
	}
	c.t.Fatal("no frame in 1000 lines")
	return f
}

// nextEvent skips comments and the retry line.
func (c *sseClient) nextEvent() sseFrame {
	c.t.Helper()
	for range 100 {
		if f := c.next(); f.event != "" {
			return f
		}
	}
	c.t.Fatal("no event in 100 frames")
	return sseFrame{}
}

func newEventsServer(t *testing.T, cfg func(*Server)) (*httptest.Server, *events.Bus, *Server) {
	t.Helper()
	srv, _, _ := newTestServer(t)
	bus := events.New(8)
	srv.cfg.Events = bus
	if cfg != nil {
		cfg(srv)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.ConnContext = ConnContext
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(srv.CloseEvents)
	return ts, bus, srv
}

// waitSubscribers waits until the bus has n subscribers.
func waitSubscribers(t *testing.T, bus *events.Bus, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for bus.Subscribers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers, want %d", bus.Subscribers(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEventsStreamTheWantedTypesInOrder(t *testing.T) {
	ts, bus, _ := newEventsServer(t, nil)
	c := openEvents(t, ts.URL, "?types=reload,stream.status", nil)
	if ct := c.resp.Header.Get("Content-Type"); c.resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", c.resp.StatusCode, ct)
	}
	waitSubscribers(t, bus, 1)
	bus.Publish(events.StreamCreated, events.StreamChange{})
	first := bus.Publish(events.Reload, events.Reloaded{Shard: 3, Op: "reload", Outcome: "ok"})
	second := bus.Publish(events.StreamStatus, events.StatusChange{State: "active"})
	for _, want := range []events.Event{first, second} {
		f := c.nextEvent()
		if f.event != want.Type || f.id != strconv.FormatUint(want.ID, 10) {
			t.Fatalf("got event %q id %s, want %q id %d", f.event, f.id, want.Type, want.ID)
		}
		var ev events.Event
		if err := json.Unmarshal([]byte(f.data), &ev); err != nil || ev.ID != want.ID || ev.Type != want.Type || string(ev.Data) != string(want.Data) {
			t.Fatalf("data %s (%v), want the event %d as JSON", f.data, err, want.ID)
		}
	}
}

func TestEventsRefuseAnUnknownType(t *testing.T) {
	ts, _, _ := newEventsServer(t, nil)
	resp, err := http.Get(ts.URL + "/v1/events?types=reload,nope")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 400 || body["error"]["field"] != "types" || !strings.Contains(body["error"]["message"], "nope") {
		t.Fatalf("status %d, body %v; want 400 naming the field types and the type", resp.StatusCode, body)
	}
}

// A client that reconnects with Last-Event-ID gets what it missed; one
// whose id is gone from the window (or not an id) gets a reset carrying
// the newest id.
func TestEventsResumeOrReset(t *testing.T) {
	ts, bus, _ := newEventsServer(t, nil)
	var ids []uint64
	for i := range 5 {
		ids = append(ids, bus.Publish(events.Reload, events.Reloaded{Shard: i}).ID)
	}
	c := openEvents(t, ts.URL, "", map[string]string{"Last-Event-ID": strconv.FormatUint(ids[2], 10)})
	for _, want := range ids[3:] {
		if f := c.nextEvent(); f.id != strconv.FormatUint(want, 10) {
			t.Fatalf("resumed with %q, want id %d", f.id, want)
		}
	}
	for range 10 { // the window keeps 8
		ids = append(ids, bus.Publish(events.Reload, nil).ID)
	}
	newest := strconv.FormatUint(ids[len(ids)-1], 10)
	for _, h := range []map[string]string{{"Last-Event-ID": strconv.FormatUint(ids[1], 10)}, {"Last-Event-ID": "junk"}} {
		c := openEvents(t, ts.URL, "", h)
		f := c.nextEvent()
		if f.event != events.Reset || f.id != newest || !strings.Contains(f.data, "list again") {
			t.Fatalf("resuming with %v: got %+v, want a reset with id %s", h, f, newest)
		}
	}
	// ?last_event_id= for clients that cannot set the header.
	c = openEvents(t, ts.URL, "?last_event_id="+strconv.FormatUint(ids[len(ids)-2], 10), nil)
	if f := c.nextEvent(); f.id != newest {
		t.Fatalf("resumed with %+v, want id %s", f, newest)
	}
}

func TestEventsKeepAlive(t *testing.T) {
	ts, _, _ := newEventsServer(t, func(s *Server) { s.cfg.EventsKeepAlive = 20 * time.Millisecond })
	c := openEvents(t, ts.URL, "", nil)
	for range 3 {
		if f := c.next(); f.comment != "keep-alive" && f.comment != "connected" {
			t.Fatalf("got %+v, want keep-alive comments on an idle stream", f)
		}
	}
}

// A client that never reads is dropped once its buffer is full, and its
// handler gives up at the write deadline: nothing it holds stays.
func TestEventsClientThatNeverReadsIsDropped(t *testing.T) {
	done := make(chan int, 1)
	ts, bus, _ := newEventsServer(t, func(s *Server) {
		s.cfg.EventsWriteTimeout = 2 * time.Second
		s.cfg.OnRequest = func(route string, code int, d time.Duration) {
			if route == "/v1/events" {
				done <- code
			}
		}
	})
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /v1/events HTTP/1.1\r\nHost: %s\r\n\r\n", ts.Listener.Addr())
	waitSubscribers(t, bus, 1)
	big := strings.Repeat("x", 16<<10)
	before := heapInUse()
	for range 10 * eventsBuffer { // 40 MiB published
		bus.Publish(events.Reload, events.Reloaded{Error: big})
	}
	if st := bus.Stats(); st.Subscribers != 0 || st.Dropped != 1 {
		t.Fatalf("after %d events of 16 KiB unread: %+v; want the client dropped", st.Published, st)
	}
	// What stays is at most the client's buffer (4 MiB) and the window.
	if grew := int64(heapInUse()) - int64(before); grew > 16<<20 {
		t.Errorf("the heap grew by %d MiB for a client that reads nothing", grew>>20)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler of a client that never reads did not end after its write deadline")
	}
}

func TestCloseEventsEndsTheStreams(t *testing.T) {
	ts, bus, srv := newEventsServer(t, nil)
	c := openEvents(t, ts.URL, "", nil)
	waitSubscribers(t, bus, 1)
	srv.CloseEvents()
	for range 10 {
		if _, err := c.r.ReadString('\n'); err != nil {
			waitSubscribers(t, bus, 0)
			return
		}
	}
	t.Fatal("the stream went on after CloseEvents")
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
