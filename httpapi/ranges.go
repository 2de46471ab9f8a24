package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"github.com/streamconductor/stream-conductor/stream"
)

// listenValue is a request's "listen": a port as a number, or as a
// string "10000" or "10000-10099" (a range). It is written back as the
// first port, a number: a range's last port goes in "listen_end".
type listenValue struct{ first, last int }

// UnmarshalJSON reads a port number, or a range as a string "A-B" (a
// single port as a string is refused: types stay strict).
func (l *listenValue) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		first, last, err := stream.ParsePorts(s)
		if err == nil && !strings.Contains(s, "-") {
			err = errors.New("a single port is a number, not a string")
		}
		if err != nil {
			return &fieldTypeError{field: "listen", message: fmt.Sprintf("%q: %v (a port number, or a range such as \"10000-10099\")", truncate(s), err)}
		}
		*l = listenValue{first: first, last: last}
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil {
		return &fieldTypeError{field: "listen", message: "must be a port number or a range such as \"10000-10099\""}
	}
	*l = listenValue{first: n, last: n}
	return nil
}

// MarshalJSON writes the first port.
func (l listenValue) MarshalJSON() ([]byte, error) { return []byte(strconv.Itoa(l.first)), nil }

// pathRef reads {protocol} and {port} of the URL: a stream's id and its
// last port ("tcp/10000-10099" names a range; "tcp/10000" its first
// port, the range's id, or a single port).
func pathRef(r *http.Request) (stream.ID, int, error) {
	v := mux.Vars(r)
	p, err := stream.ParseProtocol(v["protocol"])
	if err != nil {
		return stream.ID{}, 0, errInvalid("protocol", "must be tcp or udp, not %q", truncate(v["protocol"]))
	}
	first, last, err := stream.ParsePorts(v["port"])
	if err != nil {
		return stream.ID{}, 0, errInvalid("listen", "want a port 1-65535 or a range such as 10000-10099, not %q: %v", truncate(v["port"]), err)
	}
	return stream.ID{Protocol: p, Port: first}, last, nil
}

// rangeEnd returns the end of the range a request names: listen_end, or
// the last port of a "listen" string; 0 when it names none.
func (q specRequest) rangeEnd() (int, error) {
	end := 0
	if q.Listen != nil && q.Listen.last != q.Listen.first {
		end = q.Listen.last
	}
	if q.ListenEnd != nil {
		if end != 0 && *q.ListenEnd != end {
			return 0, errInvalid("listen_end", "the body says %d but listen says %s", *q.ListenEnd, stream.PortsText(q.Listen.first, q.Listen.last))
		}
		end = *q.ListenEnd
	}
	if q.Range != "" {
		first, last, err := stream.ParsePorts(q.Range)
		if err != nil || last == first || (q.Listen != nil && first != q.Listen.first) || (end != 0 && last != end) {
			return 0, errInvalid("range", "%q does not agree with listen and listen_end (a range such as \"10000-10099\")", truncate(q.Range))
		}
		end = last
	}
	return end, nil
}

// resolvedEnd is the last port of the spec a request for the URL's
// range (first port..urlEnd) asks for: the body's range when it names
// one, else the URL's (0 for one port).
func (q specRequest) resolvedEnd(port, urlEnd int) (int, error) {
	end, err := q.rangeEnd()
	if err != nil {
		return 0, err
	}
	if first, _, _ := stream.ParsePorts(q.Range); q.Range != "" && first != port {
		return 0, errInvalid("range", "the body says %s but the URL's first port is %d", truncate(q.Range), port)
	}
	if urlEnd > port && end != 0 && end != urlEnd {
		return 0, errInvalid("listen_end", "the body says %s but the URL says %s", stream.PortsText(port, end), stream.PortsText(port, urlEnd))
	}
	if end == 0 && urlEnd > port {
		end = urlEnd
	}
	return end, nil
}

// coveringStream is the range stream of protocol p that listens on port
// without having it as its id, if any: "tcp/10050" names no stream, but
// is part of tcp/10000-10099.
func (s *Server) coveringStream(p stream.Protocol, port int) (stream.Spec, bool) {
	specs, _ := s.store.List()
	for _, sp := range specs {
		if sp.Protocol == p && sp.IsRange() && sp.Covers(port) {
			return sp, true
		}
	}
	return stream.Spec{}, false
}

// lookup returns the stream the URL names, or the 404 that says why
// there is none: a port inside a range names that range, and a range
// must be the stored stream's exactly.
func (s *Server) lookup(id stream.ID, last int) (stream.Spec, error) {
	sp, err := s.store.Get(id)
	if err != nil {
		if cov, ok := s.coveringStream(id.Protocol, id.Port); ok {
			return sp, errNotFound("port %d is part of stream %s", id.Port, cov.Ref())
		}
		return sp, storeError(err, string(id.Protocol)+"/"+stream.PortsText(id.Port, last))
	}
	if last > id.Port && sp.LastPort() != last {
		return sp, errNotFound("no stream %s/%s: stream %s listens on %s", id.Protocol, stream.PortsText(id.Port, last), id, sp.Ports())
	}
	return sp, nil
}
