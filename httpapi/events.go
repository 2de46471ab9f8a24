package httpapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/streamconductor/stream-conductor/events"
)

const (
	// eventsBuffer is how many events a client may leave unread before
	// it is dropped.
	eventsBuffer = 256
	// defaultEventsWriteTimeout bounds each write to a client: one that
	// stops reading is let go after it, whatever its buffer holds.
	defaultEventsWriteTimeout = 10 * time.Second
	// eventsRetry is the reconnection delay the client is told (ms).
	eventsRetry = 2000
	// defaultKeepAlive is the period of keep-alive comments.
	defaultKeepAlive = 15 * time.Second
	// eventsSendBuffer bounds the kernel's send buffer of an events
	// connection: left to grow, it would hold megabytes for a client that
	// stopped reading before the daemon could notice.
	eventsSendBuffer = 64 << 10
)

type connKey struct{}

// ConnContext keeps each connection in its requests' context, so that
// GET /v1/events can bound its send buffer; set it as the
// http.Server's ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// streamEvents serves GET /v1/events: server-sent events from the bus,
// resumed after Last-Event-ID when the window still holds what the client
// missed, and otherwise begun with a reset event. Proxies are kept from
// cutting an idle stream by comments every EventsKeepAlive; a client that
// does not keep up is dropped with the reason, so it never slows the
// daemon.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Events == nil {
		return errNotFound("this daemon publishes no events")
	}
	types, err := eventTypes(r.URL.Query().Get("types"))
	if err != nil {
		return err
	}
	after, resumeErr := lastEventID(r)
	sub, missed, reset := s.cfg.Events.Subscribe(after, types, eventsBuffer)
	defer sub.Close()
	reset = reset || resumeErr != nil

	if c, ok := r.Context().Value(connKey{}).(*net.TCPConn); ok {
		if err := c.SetWriteBuffer(eventsSendBuffer); err != nil {
			s.log.Debug().Err(err).Msg("events: send buffer not bounded")
		}
	}
	rc := http.NewResponseController(w)
	// The server's read and write deadlines are for requests that end;
	// this one lasts until the client leaves.
	if err := rc.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx in front: do not buffer
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)

	c := &sseWriter{w: w, rc: rc, deadline: cmp.Or(s.cfg.EventsWriteTimeout, defaultEventsWriteTimeout)}
	c.write([]byte("retry: " + strconv.Itoa(eventsRetry) + "\n: connected\n\n"))
	if reset {
		c.write(resetEvent(sub.Last, resetReason(after, resumeErr)))
	} else {
		for _, ev := range missed {
			c.write(ev.SSE())
		}
	}
	c.flush()

	keepAlive := time.NewTicker(cmp.Or(s.cfg.EventsKeepAlive, defaultKeepAlive))
	defer keepAlive.Stop()
	for c.err == nil {
		select {
		case <-r.Context().Done():
			return nil
		case <-s.closing:
			return nil
		case <-keepAlive.C:
			c.write([]byte(": keep-alive\n\n"))
		case ev, ok := <-sub.C:
			if !ok {
				s.dropped(c, r, sub.Reason())
				return nil
			}
			c.write(ev.SSE())
			for n := len(sub.C); n > 0 && c.err == nil; n-- { // what else is queued, in the same flush
				if ev, ok = <-sub.C; ok {
					c.write(ev.SSE())
				}
			}
		}
		c.flush()
	}
	if reason := sub.Reason(); reason != "" { // dropped while a write was blocked
		s.log.Warn().Str("remote", r.RemoteAddr).Str("reason", reason).Msg("events client dropped")
		return nil
	}
	s.log.Debug().Err(c.err).Str("remote", r.RemoteAddr).Msg("events client gone")
	return nil
}

// dropped tells a client the bus let go of why, if it still reads, and
// logs it.
func (s *Server) dropped(c *sseWriter, r *http.Request, reason string) {
	if reason == "" {
		return
	}
	s.log.Warn().Str("remote", r.RemoteAddr).Str("reason", reason).Msg("events client dropped")
	body, _ := json.Marshal(events.ResetInfo{Reason: reason})
	c.deadline = min(c.deadline, time.Second)
	c.write([]byte("event: dropped\ndata: " + string(body) + "\n\n"))
	c.flush()
}

// sseWriter writes to one events client, each write bounded by a
// deadline; the first error ends the stream.
type sseWriter struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	deadline time.Duration
	err      error
}

func (c *sseWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	if c.err = c.rc.SetWriteDeadline(time.Now().Add(c.deadline)); c.err != nil {
		return
	}
	_, c.err = c.w.Write(b)
}

func (c *sseWriter) flush() {
	if c.err == nil {
		c.err = c.rc.Flush()
	}
}

// resetEvent tells the client to list again; its id is the latest event's,
// so that the client resumes from there next time.
func resetEvent(last uint64, reason string) []byte {
	body, _ := json.Marshal(events.ResetInfo{Reason: reason})
	return []byte("id: " + strconv.FormatUint(last, 10) + "\nevent: " + events.Reset + "\ndata: " + string(body) + "\n\n")
}

func resetReason(after *uint64, resumeErr error) string {
	if resumeErr != nil {
		return resumeErr.Error() + "; list again"
	}
	return "the events after id " + strconv.FormatUint(*after, 10) + " are no longer kept (or are from an earlier run of the daemon); list again"
}

// eventTypes parses ?types= (comma-separated; empty: every type).
func eventTypes(v string) ([]string, error) {
	if v == "" {
		return nil, nil
	}
	var out []string
	for _, t := range strings.Split(v, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if !slices.Contains(events.Types, t) {
			return nil, errInvalid("types", "unknown event type %q; the types are %s", t, strings.Join(events.Types, ", "))
		}
		out = append(out, t)
	}
	return out, nil
}

// lastEventID is where a reconnecting client resumes: the Last-Event-ID
// header, or ?last_event_id= for clients that cannot set headers. nil:
// a new client. An id that is not one of ours is an error (the client
// gets a reset).
func lastEventID(r *http.Request) (*uint64, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("last_event_id")
	}
	if v == "" {
		return nil, nil
	}
	id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return nil, errors.New("Last-Event-ID " + strconv.Quote(v) + " is not an event id of this daemon")
	}
	return &id, nil
}
