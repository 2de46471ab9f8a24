// Package stream holds the domain types shared by the store, the renderer,
// the reconciler and the API: a stream's desired specification, its id and
// its observed status. It has no behaviour beyond naming and comparing them.
package stream

import (
	"slices"
	"time"
)

// Protocol is the transport a stream forwards.
type Protocol string

// The protocols nginx's stream module can forward.
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// Balance methods for streams with several backends.
const (
	RoundRobin   = "round_robin"
	LeastConn    = "least_conn"
	HashClientIP = "hash_client_ip"
)

// Spec is the desired state of one stream: a listen port on the edge host
// forwarded to one or more backends. The store keeps it; nginxconf renders it.
type Spec struct {
	Protocol Protocol `json:"protocol"`
	Listen   int      `json:"listen"`
	// ListenEnd, when above Listen, makes the stream listen on every
	// port from Listen to ListenEnd (a range); 0 for one port.
	ListenEnd int `json:"listen_end,omitempty"`
	// PortMode says where a range's ports forward: PortModeSame (each to
	// the same port on the one backend host) or PortModeFixed; empty for
	// one port.
	PortMode       string   `json:"port_mode,omitempty"`
	Bind           string   `json:"bind,omitempty"`
	Backends       []string `json:"backends"`
	Balance        string   `json:"balance,omitempty"`
	MaxFails       *int     `json:"max_fails,omitempty"`
	FailTimeout    string   `json:"fail_timeout,omitempty"`
	ProxyProtocol  bool     `json:"proxy_protocol,omitempty"`
	ConnectTimeout string   `json:"connect_timeout,omitempty"`
	IdleTimeout    string   `json:"idle_timeout,omitempty"`
	Allow          []string `json:"allow,omitempty"`
	Description    string   `json:"description,omitempty"`
	// Nodes names the nodes of a fleet that serve the stream (sorted,
	// without duplicates); empty means every node.
	Nodes []string `json:"nodes,omitempty"`
	// Routes, when set, share the port among TLS server names (SNI); a
	// routed stream's Backends are its default (empty: close the
	// connections no route matches).
	Routes []Route `json:"routes,omitempty"`
	// Ban, when set, bans source addresses whose sessions keep failing
	// (see BanPolicy); the bans themselves are not part of the spec.
	Ban *BanPolicy `json:"ban,omitempty"`

	// Limits and deny list (issue 16): what nginx admits before it
	// proxies, on each node that serves the stream. Zero or empty: none.
	// MaxConnections bounds the sessions open at once on the whole
	// stream (all the ports of a range together); MaxConnectionsPerClient
	// those of one client address. nginx refuses the session beyond
	// either at once (status 503).
	MaxConnections          int `json:"max_connections,omitempty"`
	MaxConnectionsPerClient int `json:"max_connections_per_client,omitempty"`
	// UploadRate and DownloadRate bound the bytes per second nginx reads
	// from the client and from the backend, in nginx's size syntax
	// ("512k", "1m"), for EACH connection: two connections of one client
	// carry twice as much.
	UploadRate   string `json:"upload_rate,omitempty"`
	DownloadRate string `json:"download_rate,omitempty"`
	// Deny lists source CIDRs refused (status 403), also when an Allow
	// entry holds them: nginx checks deny before allow.
	Deny []string `json:"deny,omitempty"`

	// Expiry (expiry.go): ExpiresAt, when set, is when the stream is
	// deleted (UTC, whole milliseconds); TTL is the lifetime it was last
	// given ("2h0m0s"), which a renew without a body gives again. The
	// write path turns a TTL into ExpiresAt when it writes, so that the
	// stored spec (and an export of it) keeps the same deadline.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	TTL       string     `json:"ttl,omitempty"`

	// Set by the store on every write.
	Revision  uint64    `json:"revision"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ID is the stream's identity: its protocol and listen port.
func (s Spec) ID() ID { return ID{Protocol: s.Protocol, Port: s.Listen} }

// SameDesired reports whether s and o ask for the same forwarding, ignoring
// the fields the store sets (revision and timestamps).
func (s Spec) SameDesired(o Spec) bool {
	return s.Protocol == o.Protocol && s.Listen == o.Listen && s.ListenEnd == o.ListenEnd &&
		s.PortMode == o.PortMode && s.Bind == o.Bind &&
		slices.Equal(s.Backends, o.Backends) && s.Balance == o.Balance &&
		equalIntPtr(s.MaxFails, o.MaxFails) && s.FailTimeout == o.FailTimeout &&
		s.ProxyProtocol == o.ProxyProtocol && s.ConnectTimeout == o.ConnectTimeout &&
		s.IdleTimeout == o.IdleTimeout && slices.Equal(s.Allow, o.Allow) &&
		s.Description == o.Description && slices.Equal(s.Nodes, o.Nodes) &&
		equalRoutes(s.Routes, o.Routes) && s.sameLimits(o) && equalBan(s.Ban, o.Ban) &&
		s.sameExpiry(o)
}

// Targets reports whether the node named node serves s: s names no
// nodes (every node serves it) or names this one.
func (s Spec) Targets(node string) bool {
	return len(s.Nodes) == 0 || slices.Contains(s.Nodes, node)
}

// Clone returns a deep copy of s, so that callers may change slices freely.
func (s Spec) Clone() Spec {
	c := s
	c.Backends = slices.Clone(s.Backends)
	c.Allow = slices.Clone(s.Allow)
	c.Nodes = slices.Clone(s.Nodes)
	c.Routes = cloneRoutes(s.Routes)
	c.Deny = slices.Clone(s.Deny)
	c.Ban = cloneBan(s.Ban)
	if s.MaxFails != nil {
		v := *s.MaxFails
		c.MaxFails = &v
	}
	if s.ExpiresAt != nil {
		v := *s.ExpiresAt
		c.ExpiresAt = &v
	}
	return c
}

func equalIntPtr(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// State is where a stream stands between desired and applied.
type State string

// The states of a stream, owned by the reconciler.
const (
	// Pending: the desired revision is not applied yet.
	Pending State = "pending"
	// Active: applied, and nginx listens on its port.
	Active State = "active"
	// Failed: nginx rejected the stream or could not bind its port; the
	// status error says why in nginx's own words.
	Failed State = "failed"
)

// Status is the observed state of one stream at one revision.
type Status struct {
	State    State     `json:"state"`
	Revision uint64    `json:"revision"`
	Error    string    `json:"error,omitempty"`
	Since    time.Time `json:"since"`
}
