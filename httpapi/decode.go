package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// MaxBodyBytes bounds every request body but an import's.
const MaxBodyBytes = 64 << 10

// MaxImportBytes bounds the body of POST /v1/import (10,000 streams take
// about 1 MiB).
const MaxImportBytes = 16 << 20

// specRequest is the JSON body of PUT and POST /v1/streams.
type specRequest struct {
	Protocol *string      `json:"protocol"`
	Listen   *listenValue `json:"listen"`
	// ListenEnd and PortMode make a port range (or "listen":
	// "10000-10099" does).
	ListenEnd *int   `json:"listen_end,omitempty"`
	PortMode  string `json:"port_mode,omitempty"`
	// Range is a range as GET shows it ("10000-10099"), so that the
	// answer can be PUT back; it must agree with listen and listen_end.
	Range string `json:"range,omitempty"`
	// Ports asks POST /v1/streams for a range of that many ports, on the
	// first free run of PORT_RANGE.
	Ports          *int     `json:"ports,omitempty"`
	Bind           string   `json:"bind"`
	Backend        string   `json:"backend"`
	Backends       []string `json:"backends"`
	Balance        string   `json:"balance"`
	MaxFails       *int     `json:"max_fails"`
	FailTimeout    string   `json:"fail_timeout"`
	ProxyProtocol  bool     `json:"proxy_protocol"`
	ConnectTimeout string   `json:"connect_timeout"`
	IdleTimeout    string   `json:"idle_timeout"`
	Allow          []string `json:"allow"`
	Description    string   `json:"description"`
	Nodes          []string `json:"nodes"`
	// Routes share the port among TLS server names; Default is where
	// the names they do not match go (absent: the connection is closed).
	Routes  []stream.Route `json:"routes,omitempty"`
	Default backendList    `json:"default,omitempty"`
	// Limits and deny list (issue 16), as in stream.Spec.
	MaxConnections          int      `json:"max_connections,omitempty"`
	MaxConnectionsPerClient int      `json:"max_connections_per_client,omitempty"`
	UploadRate              string   `json:"upload_rate,omitempty"`
	DownloadRate            string   `json:"download_rate,omitempty"`
	Deny                    []string `json:"deny,omitempty"`
	// Ban bans source addresses whose sessions keep failing.
	Ban *stream.BanPolicy `json:"ban,omitempty"`

	// Expiry (see writes/expiry.go): a lifetime from now, or a deadline
	// (RFC 3339); expires_in_seconds, as GET shows it, is accepted back
	// and ignored.
	TTL       string `json:"ttl,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty"`
	ExpiresIn *int64 `json:"expires_in_seconds,omitempty"`
}

// decodeJSON reads exactly one JSON object into v: the body must be JSON
// (by Content-Type), at most MaxBodyBytes, with no unknown fields and
// nothing after the object.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeJSONLimit(w, r, v, MaxBodyBytes)
}

// decodeJSONLimit is decodeJSON with another size limit.
func decodeJSONLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	body, err := readJSONBody(w, r, limit)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return &Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "the body is empty; send a JSON object"}
	}
	return decodeBody(body, v)
}

// readJSONBody reads a body sent as JSON (by Content-Type, when it has
// one) of at most limit bytes.
func readJSONBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, &Error{Status: http.StatusUnsupportedMediaType, Code: CodeMediaType,
				Message: fmt.Sprintf("the body must be JSON, not %q: send Content-Type: application/json (curl --json)", ct)}
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fmt.Sprintf("the body is larger than %d bytes", limit)}
		}
		return nil, &Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "could not read the body", Cause: err}
	}
	return body, nil
}

// decodeBody decodes exactly one JSON object into v, with no unknown
// fields and nothing after it.
func decodeBody(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "unexpected data after the JSON object"}
	}
	return nil
}

// jsonError explains a decoding failure, naming the field when it can.
func jsonError(err error) *Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var fte *fieldTypeError
	switch {
	case errors.As(err, &fte):
		return errInvalid(fte.field, "%s", fte.message)
	case errors.As(err, &syn):
		return &Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn)}
	case errors.As(err, &typ):
		if typ.Field == "" {
			return &Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: fmt.Sprintf("the body must be a JSON object, not %s", typ.Value)}
		}
		return errInvalid(typ.Field, "must be %s, not %s", jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "malformed JSON: the body ends too early"}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		f = strings.Trim(f, `"`)
		return errInvalid(f, "unknown field %q", f)
	}
	return &Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "malformed JSON: " + err.Error()}
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "uint64":
		return "an integer"
	case "slice":
		return "an array"
	case "ptr":
		return "a value of another type"
	}
	return "a " + k
}

// toSpec turns a request body into a spec for protocol p and port (0 when
// the port is to be allocated), up to urlEnd when the URL names a range
// (else urlEnd is port or 0), checking that the body agrees with the URL.
func (q specRequest) toSpec(p stream.Protocol, port, urlEnd int) (stream.Spec, error) {
	if q.Protocol != nil && !strings.EqualFold(*q.Protocol, string(p)) && p != "" {
		return stream.Spec{}, errInvalid("protocol", "the body says %q but the URL says %q", *q.Protocol, p)
	}
	if q.Protocol != nil && p == "" {
		p = stream.Protocol(strings.ToLower(*q.Protocol))
	}
	if q.Ports != nil && port != 0 {
		return stream.Spec{}, errInvalid("ports", "only POST /v1/streams allocates ports; PUT names them in the URL (/v1/streams/{protocol}/{first}-{last})")
	}
	if q.Listen != nil && q.Listen.first != port {
		if port == 0 {
			return stream.Spec{}, errInvalid("listen", "POST allocates the port; to choose one use PUT /v1/streams/{protocol}/{port}")
		}
		return stream.Spec{}, errInvalid("listen", "the body says %d but the URL says %d", q.Listen.first, port)
	}
	end, err := q.resolvedEnd(port, urlEnd)
	if err != nil {
		return stream.Spec{}, err
	}
	if port == 0 && end != 0 {
		return stream.Spec{}, errInvalid("listen_end", "POST allocates the ports (\"ports\": N for a range of N); to choose a range use PUT /v1/streams/{protocol}/{first}-{last}")
	}
	backends, err := q.forwarding()
	if err != nil {
		return stream.Spec{}, err
	}
	expiresAt, err := parseDeadline(q.ExpiresAt)
	if err != nil {
		return stream.Spec{}, err
	}
	return stream.Spec{
		Protocol: p, Listen: port, ListenEnd: end, PortMode: q.PortMode, Bind: q.Bind, Backends: backends, Balance: q.Balance,
		MaxFails: q.MaxFails, FailTimeout: q.FailTimeout, ProxyProtocol: q.ProxyProtocol,
		ConnectTimeout: q.ConnectTimeout, IdleTimeout: q.IdleTimeout, Allow: q.Allow,
		Description: q.Description, Nodes: q.Nodes, Routes: q.Routes, Ban: q.Ban,
		MaxConnections: q.MaxConnections, MaxConnectionsPerClient: q.MaxConnectionsPerClient,
		UploadRate: q.UploadRate, DownloadRate: q.DownloadRate, Deny: q.Deny,
		TTL: q.TTL, ExpiresAt: expiresAt,
	}, nil
}

// parseDeadline reads an expires_at: RFC 3339 with a time zone ("" is
// none). Whether it is in the future, and not too far, is the write
// path's check.
func parseDeadline(v string) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil, errInvalid("expires_at", "%q is not an RFC 3339 time such as 2026-12-01T15:00:00Z", truncate(v))
	}
	return &t, nil
}
