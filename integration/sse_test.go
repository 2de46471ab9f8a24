package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The reader of GET /v1/events that the events tests share.

// sseEvent is one server-sent event: its id and type fields, and the
// event's data, decoded.
type sseEvent struct {
	ID   uint64
	Type string
	Data map[string]any // the events.Event's "data"
	Raw  string         // the data line as sent
}

// sseReader reads GET /v1/events until the test ends or its deadline,
// and keeps every event it read.
type sseReader struct {
	t      *testing.T
	close  func() // ends the stream
	mu     sync.Mutex
	events []sseEvent
	err    error // why the stream ended
	done   chan struct{}
}

// watchEvents connects to d's GET /v1/events (query: "types=..." or "")
// and reads in the background, for at most two minutes.
func watchEvents(t *testing.T, d *daemon, query string) *sseReader {
	t.Helper()
	return watchEventsWith(t, d, query, nil)
}

// watchEventsWith is watchEvents with request headers (Last-Event-ID,
// Authorization).
func watchEventsWith(t *testing.T, d *daemon, query string, header map[string]string) *sseReader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	req, err := http.NewRequestWithContext(ctx, "GET", d.url("/v1/events?"+query), nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /v1/events: %v", err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET /v1/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := &sseReader{t: t, done: make(chan struct{})}
	r.close = func() {
		cancel()
		<-r.done
	}
	go func() {
		defer close(r.done)
		defer resp.Body.Close()
		r.read(bufio.NewScanner(resp.Body))
	}()
	t.Cleanup(r.close)
	return r
}

// read parses the stream: "field: value" lines, an event at each blank
// line; comments (":") and retry lines are skipped.
func (r *sseReader) read(sc *bufio.Scanner) {
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var ev sseEvent
	var data string
	for sc.Scan() {
		line := sc.Text()
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.ID, _ = strconv.ParseUint(value, 10, 64)
		case "event":
			ev.Type = value
		case "data":
			data += value
		case "":
			if line != "" || ev.Type == "" {
				continue // a comment, or nothing yet
			}
			var whole struct {
				ID   uint64         `json:"id"`
				Type string         `json:"type"`
				Data map[string]any `json:"data"`
			}
			if err := json.Unmarshal([]byte(data), &whole); err != nil && ev.Type != "reset" && ev.Type != "dropped" {
				r.fail(fmt.Errorf("event %d %s: data %q: %w", ev.ID, ev.Type, data, err))
				return
			}
			if ev.Type != "reset" && ev.Type != "dropped" && (whole.ID != ev.ID || whole.Type != ev.Type) {
				r.fail(fmt.Errorf("event id %d type %s, but its data says %d %s", ev.ID, ev.Type, whole.ID, whole.Type))
				return
			}
			ev.Data, ev.Raw = whole.Data, data
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
			ev, data = sseEvent{}, ""
		}
	}
	r.fail(fmt.Errorf("the event stream ended: %v", sc.Err()))
}

func (r *sseReader) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// failed returns why the stream ended or could not be parsed, if it did.
func (r *sseReader) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// all returns the events read so far.
func (r *sseReader) all() []sseEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sseEvent(nil), r.events...)
}

// wait returns the first event of type typ read after id after that
// match accepts (nil: any), polling until timeout.
func (r *sseReader) wait(after uint64, what, typ string, timeout time.Duration, match func(map[string]any) bool) sseEvent {
	r.t.Helper()
	var found sseEvent
	eventually(r.t, what, timeout, func() bool {
		for _, ev := range r.all() {
			if ev.ID > after && ev.Type == typ && (match == nil || match(ev.Data)) {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

// last is the id of the newest event read (0: none).
func (r *sseReader) last() uint64 {
	evs := r.all()
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].ID
}

// count counts the events of type typ read after id that match accepts.
func (r *sseReader) count(after uint64, typ string, match func(map[string]any) bool) int {
	n := 0
	for _, ev := range r.all() {
		if ev.ID > after && ev.Type == typ && (match == nil || match(ev.Data)) {
			n++
		}
	}
	return n
}

// isStream matches the events of stream id.
func isStream(id string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["id"] == id }
}

// summary lists what was read, for failure messages.
func (r *sseReader) summary() string {
	var b strings.Builder
	for _, ev := range r.all() {
		fmt.Fprintf(&b, "#%d %s %s\n", ev.ID, ev.Type, ev.Raw)
	}
	return b.String()
}

// statusIs matches the stream.status data of stream id in state.
func statusIs(id, state string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["id"] == id && m["state"] == state }
}
