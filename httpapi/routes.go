package httpapi

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// backendList is the "default" of a routed stream: one backend as a
// string, or a list of them. It is written back as a list.
type backendList []string

// UnmarshalJSON reads a string, a list of strings or null.
func (l *backendList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = backendList{s}
		return nil
	}
	var xs []string
	if err := json.Unmarshal(b, &xs); err != nil {
		return &fieldTypeError{field: "default", message: "must be a backend host:port or a list of them"}
	}
	*l = xs
	return nil
}

// fieldTypeError is a field of the body a custom decoder refused.
type fieldTypeError struct{ field, message string }

func (e *fieldTypeError) Error() string { return e.field + " " + e.message }

// forwarding returns the backends of the spec the request asks for: a
// routed stream's default, or the stream's backends.
func (q specRequest) forwarding() ([]string, error) {
	if len(q.Routes) > 0 {
		if q.Backend != "" || len(q.Backends) > 0 {
			return nil, errInvalid("backends", "with routes, give the default as \"default\"")
		}
		return q.Default, nil
	}
	if len(q.Default) > 0 {
		return nil, errInvalid("default", "is where routes send the server names they do not match: give routes, or give backend or backends without routes")
	}
	if q.Backend != "" {
		if len(q.Backends) > 0 {
			return nil, errInvalid("backend", "give backend or backends, not both")
		}
		return []string{q.Backend}, nil
	}
	return q.Backends, nil
}

// exportSpec is sp as GET /v1/export lists it: the body that would
// create it again.
func exportSpec(sp stream.Spec) specRequest {
	p, l := string(sp.Protocol), listenValue{first: sp.Listen, last: sp.Listen}
	q := specRequest{Protocol: &p, Listen: &l, PortMode: sp.PortMode, Bind: sp.Bind, Backends: sp.Backends,
		Balance: sp.Balance, MaxFails: sp.MaxFails, FailTimeout: sp.FailTimeout, ProxyProtocol: sp.ProxyProtocol,
		ConnectTimeout: sp.ConnectTimeout, IdleTimeout: sp.IdleTimeout, Allow: sp.Allow, Description: sp.Description, Nodes: sp.Nodes,
		MaxConnections: sp.MaxConnections, MaxConnectionsPerClient: sp.MaxConnectionsPerClient,
		UploadRate: sp.UploadRate, DownloadRate: sp.DownloadRate, Deny: sp.Deny}
	q.Ban = sp.Ban
	if sp.IsRange() {
		end := sp.ListenEnd
		q.ListenEnd = &end
	}
	if sp.Routed() {
		q.Backends, q.Default, q.Routes = nil, sp.Backends, sp.Routes
	}
	q.TTL = sp.TTL
	if sp.ExpiresAt != nil {
		q.ExpiresAt = sp.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return q
}
