package nginxconf

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/streamconductor/stream-conductor/stream"
)

// RenderOptions are the node-wide settings that shape every stream file.
type RenderOptions struct {
	// Prefix starts every file name we own (STREAM_PREFIX).
	Prefix string
	// DefaultBind is the listen address of streams that name none; empty
	// means every IPv4 address.
	DefaultBind string
	// Banned are the source addresses the stream being rendered refuses
	// (package bans), canonical IP addresses, sorted. They are set per
	// call, never stored in the spec: a ban changes neither the stream's
	// revision nor its ETag.
	Banned []string
}

// headerMarker starts the first line of every file we render.
const headerMarker = "# managed by stream-conductor"

// FileName is the name of the file that holds the stream with id's config:
// <prefix><protocol>-<port>.conf.
func FileName(prefix string, id stream.ID) string {
	return prefix + string(id.Protocol) + "-" + strconv.Itoa(id.Port) + ".conf"
}

// ParseFileName is the inverse of FileName: it returns the stream id a file
// name stands for, and false for any name that is not exactly one of ours.
func ParseFileName(prefix, name string) (stream.ID, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return stream.ID{}, false
	}
	rest, ok = strings.CutSuffix(rest, ".conf")
	if !ok {
		return stream.ID{}, false
	}
	p, port, ok := strings.Cut(rest, "-")
	if !ok {
		return stream.ID{}, false
	}
	id, err := stream.ParseID(p + "/" + port)
	if err != nil {
		return stream.ID{}, false
	}
	return id, true
}

// Addrs holds the addresses each backend host name resolved to, keyed by
// the host exactly as the canonical backend spells it.
type Addrs map[string][]netip.Addr

// ErrNotRenderable means a spec cannot be rendered now: a host name that
// does not resolve, or an address a backend rule refuses.
var ErrNotRenderable = errors.New("stream cannot be applied")

// UnresolvedError is a backend host name with no address in Addrs.
type UnresolvedError struct{ Host string }

func (e *UnresolvedError) Error() string { return "no address for backend host " + e.Host }

// Names returns the host names (not IP literals) among s's backends (a
// routed stream's default and every route's), each once, in the order of
// the backends.
func Names(s stream.Spec) []string {
	var names []string
	for _, b := range s.AllBackends() {
		t, err := stream.ParseBackend(b)
		if err == nil && !t.IsIP() && !slices.Contains(names, t.Host) {
			names = append(names, t.Host)
		}
	}
	return names
}

// target is one server nginx proxies to: an address, and the backend it
// stands for when that backend is a name.
type target struct {
	addr, name string
}

// targets expands backends into addresses: an IP literal is itself, a
// name is every address it resolved to.
func targets(backends []string, addrs Addrs) ([]target, error) {
	var ts []target
	for _, b := range backends {
		t, err := stream.ParseBackend(b)
		if err != nil {
			return nil, fmt.Errorf("backend %q: %w", b, err)
		}
		if t.IsIP() {
			ts = append(ts, target{addr: t.String()})
			continue
		}
		as := addrs[t.Host]
		if len(as) == 0 {
			return nil, &UnresolvedError{Host: t.Host}
		}
		for _, a := range as {
			ts = append(ts, target{addr: netip.AddrPortFrom(a.Unmap(), uint16(t.Port)).String(), name: t.String()})
		}
	}
	return ts, nil
}

// Render returns the file name and contents for one validated spec whose
// host names resolved to addrs: nginx is given addresses only (each name
// in a comment), so it never resolves a name itself. The output depends
// only on its arguments and is byte-for-byte stable. The first line is a
// managed-file header (with no checksum: drift is judged by comparing the
// whole file with what the reconciler last wrote). The error is an
// *UnresolvedError when a name has no address in addrs.
func Render(s stream.Spec, addrs Addrs, o RenderOptions) (name string, body []byte, err error) {
	if s.Routed() {
		body, err := renderRouted(s, addrs, o)
		if err != nil {
			return "", nil, err
		}
		return FileName(o.Prefix, s.ID()), body, nil
	}
	ts, err := targets(s.Backends, addrs)
	if err != nil {
		return "", nil, err
	}
	if s.SamePort() {
		return FileName(o.Prefix, s.ID()), renderSamePort(s, ts[0], o), nil
	}
	var b bytes.Buffer
	writeHeading(&b, s)
	// One address without passive-health settings is proxied to
	// directly: an upstream block per stream doubles the time nginx takes
	// to parse 1,000 streams, and every reload pays it.
	proxyTo := ""
	direct := len(ts) == 1 && s.MaxFails == nil && s.FailTimeout == ""
	if direct {
		proxyTo = ts[0].addr
	} else {
		proxyTo = upstreamName(s)
		writeUpstream(&b, s, s.Balance, proxyTo, ts)
	}
	writeServerHead(&b, s, o)
	if direct && ts[0].name != "" {
		fmt.Fprintf(&b, "    # backend %s\n", ts[0].name)
	}
	fmt.Fprintf(&b, "    proxy_pass %s;\n", proxyTo)
	writeServerTail(&b, s)
	return FileName(o.Prefix, s.ID()), withHeader(b.Bytes()), nil
}

// upstreamName is the name of s's upstream block (a routed stream's
// default): stream_conductor_<protocol>_<port>, unique per stream.
func upstreamName(s stream.Spec) string {
	return "stream_conductor_" + string(s.Protocol) + "_" + strconv.Itoa(s.Listen)
}

// writeHeading writes the comment that names s: its id, and a range's
// ports and mode.
func writeHeading(b *bytes.Buffer, s stream.Spec) {
	fmt.Fprintf(b, "# stream %s\n", s.ID())
	if s.IsRange() {
		fmt.Fprintf(b, "%s%s (%d), port_mode %s\n", rangeLine, s.Ports(), s.PortCount(), s.PortMode)
	}
}

// renderSamePort renders a range whose every port forwards to the same
// port on one address t (the backend's, or the first its name resolved
// to): proxy_pass with $server_port, the port the client connected to.
// nginx takes no variable in an upstream's server, so there is none; an
// IP literal needs no resolver.
func renderSamePort(s stream.Spec, t target, o RenderOptions) []byte {
	var b bytes.Buffer
	writeHeading(&b, s)
	writeServerHead(&b, s, o)
	if t.name != "" {
		name, _, _ := strings.Cut(t.name, ":") // a name has no colon but its port's
		fmt.Fprintf(&b, "    # backend %s (each port to the same port)\n", name)
	}
	host := t.addr
	if ap, err := netip.ParseAddrPort(t.addr); err == nil {
		host = ap.Addr().String()
		if ap.Addr().Is6() {
			host = "[" + host + "]"
		}
	}
	fmt.Fprintf(&b, "    proxy_pass %s:$server_port;\n", host)
	writeServerTail(&b, s)
	return withHeader(b.Bytes())
}

// listenText is the address and port (or "first-last" ports) of s's
// listen directive: "0.0.0.0:9000", "[::1]:10000-10099".
func listenText(s stream.Spec, defaultBind string) string {
	ap := s.ListenAddr(defaultBind)
	if !s.IsRange() {
		return ap.String()
	}
	host := ap.Addr().String()
	if ap.Addr().Is6() {
		host = "[" + host + "]"
	}
	return host + ":" + s.Ports()
}

// writeServerHead writes the zones of s's limits, which nginx takes at
// stream {} level only, and opens s's server block with its listen
// directive.
func writeServerHead(b *bytes.Buffer, s stream.Spec, o RenderOptions) {
	writeZones(b, s)
	b.WriteString("server {\n")
	writeListen(b, s, o)
	writeBanned(b, o.Banned)
}

// writeListen writes s's listen directive.
func writeListen(b *bytes.Buffer, s stream.Spec, o RenderOptions) {
	fmt.Fprintf(b, "    listen %s", listenText(s, o.DefaultBind))
	if s.Protocol == stream.UDP {
		b.WriteString(" udp")
	}
	b.WriteString(";\n")
}

// writeServerTail writes the directives of s's server block that follow
// proxy_pass, and closes the block.
func writeServerTail(b *bytes.Buffer, s stream.Spec) {
	if s.ConnectTimeout != "" {
		fmt.Fprintf(b, "    proxy_connect_timeout %s;\n", NginxTime(s.ConnectTimeout))
	}
	if s.IdleTimeout != "" {
		fmt.Fprintf(b, "    proxy_timeout %s;\n", NginxTime(s.IdleTimeout))
	}
	if s.ProxyProtocol {
		b.WriteString("    proxy_protocol on;\n")
	}
	writeLimits(b, s)
	b.WriteString("}\n")
}

// mapKeywords are the words a map block reads as its own parameters; a
// server name spelled like one is escaped with a backslash.
var mapKeywords = []string{"default", "hostnames", "include", "volatile"}

// renderRouted renders a stream that shares its port among TLS server
// names: one upstream per route (stream_conductor_<proto>_<port>_r<N>)
// and one for the default, a map from $ssl_preread_server_name to the
// upstream's name, and a server that reads the ClientHello without
// terminating TLS and proxies to the map's value. With no default the
// map's default is "": nginx closes the connection without contacting a
// backend. The map's variable is unique per stream: nginx accepts a
// variable mapped twice, silently letting the later map win for both.
func renderRouted(s stream.Spec, addrs Addrs, o RenderOptions) ([]byte, error) {
	var b bytes.Buffer
	writeHeading(&b, s)
	base := upstreamName(s)
	for i, r := range s.Routes {
		ts, err := targets(r.Backends, addrs)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "# route %s\n", r.ServerName)
		writeUpstream(&b, s, r.Balance, base+"_r"+strconv.Itoa(i), ts)
	}
	fallback := `""`
	if len(s.Backends) > 0 {
		ts, err := targets(s.Backends, addrs)
		if err != nil {
			return nil, err
		}
		b.WriteString("# default\n")
		writeUpstream(&b, s, s.Balance, base, ts)
		fallback = base
	}
	fmt.Fprintf(&b, "map $ssl_preread_server_name $%s_route {\n    hostnames;\n", base)
	for i, r := range s.Routes {
		key := r.ServerName
		if slices.Contains(mapKeywords, key) {
			key = `\` + key
		}
		fmt.Fprintf(&b, "    %s %s_r%d;\n", key, base, i)
	}
	fmt.Fprintf(&b, "    default %s;\n}\n", fallback)
	writeServerHead(&b, s, o)
	b.WriteString("    ssl_preread on;\n")
	fmt.Fprintf(&b, "    proxy_pass $%s_route;\n", base)
	writeServerTail(&b, s)
	return withHeader(b.Bytes()), nil
}

// writeUpstream writes the upstream block of ts with balance and s's
// passive-health settings, each name's addresses under a comment naming
// the backend.
func writeUpstream(b *bytes.Buffer, s stream.Spec, balance, name string, ts []target) {
	fmt.Fprintf(b, "upstream %s {\n", name)
	switch balance {
	case stream.LeastConn:
		b.WriteString("    least_conn;\n")
	case stream.HashClientIP:
		b.WriteString("    hash $remote_addr consistent;\n")
	}
	var params string
	if s.MaxFails != nil {
		params += " max_fails=" + strconv.Itoa(*s.MaxFails)
	}
	if s.FailTimeout != "" {
		params += " fail_timeout=" + NginxTime(s.FailTimeout)
	}
	last := ""
	for _, t := range ts {
		if t.name != "" && t.name != last {
			fmt.Fprintf(b, "    # backend %s\n", t.name)
		}
		last = t.name
		fmt.Fprintf(b, "    server %s%s;\n", t.addr, params)
	}
	b.WriteString("}\n")
}

func withHeader(body []byte) []byte {
	return append([]byte(headerMarker+"; edits are overwritten.\n"), body...)
}
