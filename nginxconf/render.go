package nginxconf

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
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
}

// headerMarker starts the first line of every file we render.
const headerMarker = "# managed by stream-conductor"

// FileName is the name of the file that holds the stream with id's config:
// <prefix><protocol>-<port>.conf.
func FileName(prefix string, p stream.Protocol, port int) string {
	return prefix + string(p) + "-" + strconv.Itoa(port) + ".conf"
}

// ParseFileName is the inverse of FileName: it returns the stream id a file
// name stands for, and false for any name that is not exactly one of ours.
func ParseFileName(prefix, name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return "", false
	}
	rest, ok = strings.CutSuffix(rest, ".conf")
	if !ok {
		return "", false
	}
	p, port, ok := strings.Cut(rest, "-")
	if !ok {
		return "", false
	}
	id := p + "/" + port
	if _, _, err := stream.ParseID(id); err != nil {
		return "", false
	}
	return id, true
}

// Render returns the file name and contents for one validated spec. The
// output depends only on its arguments and is byte-for-byte stable. The
// first line is a managed-file header carrying the SHA-256 of the rest.
func Render(s stream.Spec, o RenderOptions) (name string, body []byte) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# stream %s\n", s.ID())
	// One backend without passive-health settings is proxied to directly:
	// an upstream block per stream doubles the time nginx takes to parse
	// 1,000 streams, and every reload pays it.
	target := ""
	if len(s.Backends) == 1 && s.MaxFails == nil && s.FailTimeout == "" {
		target = s.Backends[0]
	} else {
		target = "stream_conductor_" + string(s.Protocol) + "_" + strconv.Itoa(s.Listen)
		fmt.Fprintf(&b, "upstream %s {\n", target)
		switch s.Balance {
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
		for _, be := range s.Backends {
			fmt.Fprintf(&b, "    server %s%s;\n", be, params)
		}
		b.WriteString("}\n")
	}
	b.WriteString("server {\n")
	fmt.Fprintf(&b, "    listen %s", ListenAddress(s, o.DefaultBind))
	if s.Protocol == stream.UDP {
		b.WriteString(" udp")
	}
	b.WriteString(";\n")
	fmt.Fprintf(&b, "    proxy_pass %s;\n", target)
	if s.ConnectTimeout != "" {
		fmt.Fprintf(&b, "    proxy_connect_timeout %s;\n", NginxTime(s.ConnectTimeout))
	}
	if s.IdleTimeout != "" {
		fmt.Fprintf(&b, "    proxy_timeout %s;\n", NginxTime(s.IdleTimeout))
	}
	if s.ProxyProtocol {
		b.WriteString("    proxy_protocol on;\n")
	}
	for _, a := range s.Allow {
		fmt.Fprintf(&b, "    allow %s;\n", a)
	}
	if len(s.Allow) > 0 {
		b.WriteString("    deny all;\n")
	}
	b.WriteString("}\n")
	return FileName(o.Prefix, s.Protocol, s.Listen), withHeader(b.Bytes())
}

// ListenAddress is the address nginx binds for s: "9000", "127.0.0.1:9000"
// or "[::1]:9000".
func ListenAddress(s stream.Spec, defaultBind string) string {
	bind := s.Bind
	if bind == "" {
		bind = defaultBind
	}
	port := strconv.Itoa(s.Listen)
	if bind == "" {
		return port
	}
	if a, err := netip.ParseAddr(bind); err == nil && a.Is6() {
		return "[" + bind + "]:" + port
	}
	return bind + ":" + port
}

func withHeader(body []byte) []byte {
	sum := sha256.Sum256(body)
	header := headerMarker + "; edits are overwritten. sha256=" + hex.EncodeToString(sum[:]) + "\n"
	return append([]byte(header), body...)
}

// HeaderHash returns the content hash recorded in a rendered file's header,
// and whether the rest of the file still matches it.
func HeaderHash(file []byte) (hash string, intact bool) {
	line, body, ok := bytes.Cut(file, []byte("\n"))
	if !ok || !bytes.HasPrefix(line, []byte(headerMarker)) {
		return "", false
	}
	_, h, ok := bytes.Cut(line, []byte("sha256="))
	if !ok {
		return "", false
	}
	sum := sha256.Sum256(body)
	return string(h), string(h) == hex.EncodeToString(sum[:])
}
