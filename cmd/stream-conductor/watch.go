package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/stream"
)

// watchRetry bounds the wait between reconnections of watch.
var watchRetry = struct{ first, most time.Duration }{250 * time.Millisecond, 5 * time.Second}

// runWatch follows GET /v1/events until interrupted (or -n events):
// one line per event, or with -o json the events as JSON, one per line.
// It reconnects when the stream ends, resuming after the last event it
// printed.
func runWatch(c *client, o *opts, _ []string, out io.Writer) error {
	if o.output == "yaml" {
		return &cliError{exitUsage, errors.New("watch prints lines (-o table) or JSON lines (-o json)")}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := &watcher{c: c, o: o, out: out, left: o.count}
	wait := watchRetry.first
	for {
		err := w.follow(ctx)
		if ctx.Err() != nil || errors.Is(err, errEnough) {
			return nil
		}
		var ce *cliError
		if errors.As(err, &ce) && (w.last == nil || ce.code != exitUnreachable) {
			return err // never connected, or refused: say so
		}
		fmt.Fprintf(os.Stderr, "stream-conductor watch: %v; reconnecting\n", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, watchRetry.most)
	}
}

// errEnough: -n events were printed.
var errEnough = errors.New("enough events")

type watcher struct {
	c    *client
	o    *opts
	out  io.Writer
	last *uint64 // the id of the last event printed
	left int     // events still to print (-n); 0: no limit
}

// follow reads one connection to the events stream to its end.
func (w *watcher) follow(ctx context.Context) error {
	q := url.Values{}
	if w.o.types != "" {
		q.Set("types", w.o.types)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.c.url+"/v1/events?"+q.Encode(), nil)
	if err != nil {
		return &cliError{exitUsage, err}
	}
	if w.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+w.c.token)
	}
	if w.last != nil {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(*w.last, 10))
	}
	resp, err := (&http.Client{}).Do(req) // no timeout: the stream lasts
	if err != nil {
		return &cliError{exitUnreachable, fmt.Errorf("the daemon is not answering at %s: %w", w.c.url, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answerError(resp)
	}
	if w.last == nil {
		zero := uint64(0)
		w.last = &zero // connected once: from now on, reconnect
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var f sseFrame
	for sc.Scan() {
		line := sc.Text()
		if line != "" {
			f.add(line)
			continue
		}
		if f.event == "" {
			f = sseFrame{}
			continue
		}
		if err := w.print(f); err != nil {
			return err
		}
		f = sseFrame{}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("the event stream broke: %w", err)
	}
	return errors.New("the daemon ended the event stream")
}

// answerError turns an error answer into a cliError.
func answerError(resp *http.Response) error {
	var e struct {
		Error apiError `json:"error"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(raw, &e) != nil || e.Error.Message == "" {
		return &cliError{exitFailed, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(raw)))}
	}
	return &cliError{exitFailed, &e.Error}
}

// sseFrame is one server-sent event as read.
type sseFrame struct{ id, event, data string }

func (f *sseFrame) add(line string) {
	field, value, _ := strings.Cut(line, ":")
	value = strings.TrimPrefix(value, " ")
	switch field {
	case "id":
		f.id = value
	case "event":
		f.event = value
	case "data":
		f.data = value
	}
}

// print writes one event and remembers its id.
func (w *watcher) print(f sseFrame) error {
	if id, err := strconv.ParseUint(f.id, 10, 64); err == nil {
		w.last = &id
	}
	var ev events.Event
	if f.event == events.Reset || f.event == "dropped" {
		ev = events.Event{Type: f.event, Time: time.Now().UTC(), Data: json.RawMessage(f.data)}
		if w.last != nil {
			ev.ID = *w.last
		}
	} else if err := json.Unmarshal([]byte(f.data), &ev); err != nil {
		return fmt.Errorf("an event the client cannot read: %w", err)
	}
	var err error
	if w.o.output == "json" {
		var b []byte
		b, err = json.Marshal(ev)
		if err == nil {
			_, err = fmt.Fprintln(w.out, string(b))
		}
	} else {
		for _, line := range describe(ev) {
			if _, err = fmt.Fprintf(w.out, "%s  %-15s %s\n", ev.Time.Local().Format("15:04:05.000"), ev.Type, line); err != nil {
				break
			}
		}
	}
	if err != nil {
		return err
	}
	if w.left > 0 {
		if w.left--; w.left == 0 {
			return errEnough
		}
	}
	return nil
}

// describe says what an event means, in one line or (traffic) one per
// stream.
func describe(ev events.Event) []string {
	switch ev.Type {
	case events.StreamCreated, events.StreamUpdated, events.StreamDeleted, events.StreamExpired:
		var c events.StreamChange
		json.Unmarshal(ev.Data, &c)
		line := c.ID.String() + " → " + strings.Join(c.Spec.Backends, ", ")
		if n := len(c.Spec.Routes); n > 0 {
			line = fmt.Sprintf("%s → %d routes by server name, default %s", c.ID, n, orDash(strings.Join(c.Spec.Backends, ", ")))
		}
		if ev.Type == events.StreamDeleted || ev.Type == events.StreamExpired {
			line = c.ID.String()
		}
		return []string{fmt.Sprintf("%s (revision %d)", line, c.Revision)}
	case events.StreamStatus:
		var s events.StatusChange
		json.Unmarshal(ev.Data, &s)
		line := fmt.Sprintf("%s %s → %s%s", s.ID, orDash(string(s.Previous)), s.State, where(s.Node, s.Shard))
		if s.Error != "" {
			line += ": " + s.Error
		}
		return []string{line}
	case events.Bulk:
		var b events.BulkChange
		json.Unmarshal(ev.Data, &b)
		return []string{fmt.Sprintf("%s changed at once: %s (list again)", b.What, counts(b.Counts))}
	case events.Reload:
		var r events.Reloaded
		json.Unmarshal(ev.Data, &r)
		line := fmt.Sprintf("%s%s: %s in %.1f ms, %d streams", r.Op, where(r.Node, r.Shard), r.Outcome, r.DurationMS, r.Streams)
		if r.Error != "" {
			line += ": " + r.Error
		}
		return []string{line}
	case events.DriftDetected, events.DriftRepaired:
		var dr events.Drift
		json.Unmarshal(ev.Data, &dr)
		line := dr.Kind + where(dr.Node, dr.Shard)
		if len(dr.Streams) > 0 {
			line += " " + ids(dr.Streams)
		}
		if dr.Detail != "" {
			line += ": " + dr.Detail
		}
		return []string{line}
	case events.BackendHealth:
		var h events.HealthChange
		json.Unmarshal(ev.Data, &h)
		line := h.Address + " down"
		if h.Up {
			line = h.Address + " up"
		}
		if len(h.Streams) > 0 {
			line += " (" + ids(h.Streams) + ")"
		}
		if h.Error != "" {
			line += ": " + h.Error
		}
		return []string{line}
	case events.NodeJoined, events.NodeLeft:
		var n events.NodeChange
		json.Unmarshal(ev.Data, &n)
		return []string{strings.TrimSpace(n.Name + " " + n.APIURL)}
	case events.Traffic:
		var ts events.TrafficSample
		json.Unmarshal(ev.Data, &ts)
		var lines []string
		for _, id := range slices.Sorted(maps.Keys(ts.Streams)) {
			t := ts.Streams[id]
			lines = append(lines, fmt.Sprintf("%s %d sessions (%d open), %d B in, %d B out", id, t.Sessions, t.Active, t.BytesIn, t.BytesOut))
		}
		return lines
	default: // reset, dropped, and types newer than this client
		var ri events.ResetInfo
		json.Unmarshal(ev.Data, &ri)
		if ri.Reason != "" {
			return []string{ri.Reason}
		}
		return []string{string(ev.Data)}
	}
}

func where(node string, shard int) string {
	if node != "" {
		return fmt.Sprintf(" [node %s, shard %d]", node, shard)
	}
	return fmt.Sprintf(" [shard %d]", shard)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ids(list []stream.ID) string {
	s := make([]string, len(list))
	for i, id := range list {
		s[i] = id.String()
	}
	return strings.Join(s, ", ")
}

func counts(m map[string]int) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", m[k], k)
	}
	return strings.Join(parts, ", ")
}
