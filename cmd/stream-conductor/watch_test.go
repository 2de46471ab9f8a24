package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/stream"
)

// sseServer serves the frames of each connection in turn, recording the
// Last-Event-ID and the types each connection asked for.
type sseServer struct {
	mu      sync.Mutex
	conns   [][]string
	resumed []string
	types   []string
}

func (s *sseServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.resumed = append(s.resumed, r.Header.Get("Last-Event-ID"))
	s.types = append(s.types, r.URL.Query().Get("types"))
	var frames []string
	if len(s.conns) > 0 {
		frames, s.conns = s.conns[0], s.conns[1:]
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprint(w, "retry: 2000\n: connected\n\n")
	for _, f := range frames {
		fmt.Fprint(w, f)
	}
}

func frame(t *testing.T, id uint64, typ string, data any) string {
	raw, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := json.Marshal(events.Event{ID: id, Type: typ, Time: time.Date(2026, 11, 30, 7, 0, 0, 0, time.UTC), Data: raw})
	return fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", id, typ, ev)
}

func watchAgainst(t *testing.T, srv *sseServer, args ...string) (string, int) {
	t.Helper()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	var out, errOut bytes.Buffer
	env := map[string]string{"STREAM_CONDUCTOR_URL": ts.URL, "STREAM_CONDUCTOR_TOKEN": "tok"}
	code := runClient("watch", args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), code
}

// watch prints each event in a line, reconnects when the stream ends and
// resumes after the last event it printed.
func TestWatchPrintsEventsAndResumes(t *testing.T) {
	srv := &sseServer{conns: [][]string{
		{
			frame(t, 41, events.StreamStatus, events.StatusChange{ID: mustID(t, "tcp/9000"), State: "active", Previous: "pending", Shard: 2}),
			frame(t, 42, events.Reload, events.Reloaded{Shard: 2, Op: "reload", Outcome: "ok", DurationMS: 18.5, Streams: 3}),
		},
		{frame(t, 43, events.StreamStatus, events.StatusChange{ID: mustID(t, "tcp/9001"), State: "failed", Previous: "pending", Error: "bind() to 0.0.0.0:9001 failed (98: Address already in use)"})},
	}}
	out, code := watchAgainst(t, srv, "-n", "3", "-types", "stream.status,reload")
	if code != exitOK {
		t.Fatalf("exit %d; output:\n%s", code, out)
	}
	for _, want := range []string{
		"stream.status   tcp/9000 pending → active [shard 2]",
		"reload          reload [shard 2]: ok in 18.5 ms, 3 streams",
		"tcp/9001 pending → failed [shard 0]: bind() to 0.0.0.0:9001 failed (98: Address already in use)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if len(srv.resumed) != 2 || srv.resumed[0] != "" || srv.resumed[1] != "42" {
		t.Errorf("Last-Event-ID of each connection: %q, want none then 42", srv.resumed)
	}
	if srv.types[0] != "stream.status,reload" {
		t.Errorf("types asked: %q", srv.types)
	}
}

// -o json prints each event as one JSON line, for scripts.
func TestWatchJSONLines(t *testing.T) {
	srv := &sseServer{conns: [][]string{{
		frame(t, 7, events.StreamCreated, events.StreamChange{ID: mustID(t, "tcp/9000"), Revision: 3}),
		"id: 8\nevent: reset\ndata: {\"reason\":\"list again\"}\n\n",
	}}}
	out, code := watchAgainst(t, srv, "-n", "2", "-o", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 2 {
		t.Fatalf("exit %d, %d lines:\n%s", code, len(lines), out)
	}
	var first, second events.Event
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.ID != 7 || first.Type != events.StreamCreated || !strings.Contains(string(first.Data), `"revision":3`) {
		t.Errorf("first line %s (%v)", lines[0], err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil || second.Type != events.Reset || second.ID != 8 || !strings.Contains(string(second.Data), "list again") {
		t.Errorf("second line %s (%v)", lines[1], err)
	}
}

// A daemon that refuses (here: an unknown type) ends watch with its
// message and exit 1, without retrying.
func TestWatchRefusedExits(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"code":"invalid","message":"unknown event type \"x\"","field":"types"}}`)
	}))
	defer ts.Close()
	var out, errOut bytes.Buffer
	env := map[string]string{"STREAM_CONDUCTOR_URL": ts.URL}
	code := runClient("watch", []string{"-types", "x"}, func(k string) string { return env[k] }, &out, &errOut)
	if code != exitFailed || !strings.Contains(errOut.String(), `types: unknown event type "x"`) {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}

func mustID(t *testing.T, s string) stream.ID {
	t.Helper()
	id, err := stream.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
