package main

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/fleet"
	"github.com/streamconductor/stream-conductor/reconcile"
	"github.com/streamconductor/stream-conductor/stream"
)

// nodeAPIURL is NODE_API_URL if set (an http:// or https:// URL with a
// host and no path), else http://BIND_ADDRESS:BIND_PORT, with this
// host's address in place of an address that means every address.
func nodeAPIURL(set, bindAddress string, bindPort int) (string, error) {
	if set != "" {
		u, err := url.Parse(set)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
			return "", fmt.Errorf("NODE_API_URL must be an http:// or https:// URL such as http://10.0.0.5:8080, not %q", set)
		}
		return strings.TrimRight(set, "/"), nil
	}
	host := bindAddress
	if a, err := netip.ParseAddr(strings.Trim(bindAddress, "[]")); err == nil && a.IsUnspecified() {
		host = hostAddress()
	}
	return "http://" + net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(bindPort)), nil
}

// hostAddress is this host's first global unicast address, IPv4 first,
// else its name: where the other nodes reach an API bound to every
// address.
func hostAddress() string {
	addrs, _ := net.InterfaceAddrs()
	var v6 string
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || !p.Addr().IsGlobalUnicast() {
			continue
		}
		if p.Addr().Is4() {
			return p.Addr().String()
		}
		if v6 == "" {
			v6 = p.Addr().String()
		}
	}
	if v6 != "" {
		return v6
	}
	name, _ := os.Hostname()
	return name
}

// registry is the fleet's node registry as this node watches it, and
// the stop of the watch.
type registry struct {
	fleet.Registry
	close func()
}

// watchNodes watches the node registry (STATE_STORE=etcd), telling pub
// of the nodes that join and leave; with bbolt there is none (nil).
func watchNodes(st stateStore, pub events.Publisher, log zerolog.Logger) *registry {
	e, ok := st.(etcdState)
	if !ok {
		return nil
	}
	g := e.WatchNodes(log, pub)
	return &registry{Registry: g, close: g.Close}
}

// newFleet is the streams' status across the fleet (or on this node
// alone, with bbolt) that the write path waits on and the API shows.
func newFleet(cfg config, st stateStore, rec *reconcile.Pool, reg *registry) *fleet.Fleet {
	reads := localReads(st)
	fc := fleet.Config{Self: cfg.State.NodeName, Local: rec, Lookup: func(id stream.ID) (stream.Spec, bool) {
		sp, err := reads.Get(id)
		return sp, err == nil
	}}
	if reg != nil {
		fc.Registry = reg.Registry
	}
	if e, ok := st.(etcdState); ok {
		fc.Epoch = e.State.Epoch
	}
	return fleet.New(fc)
}

// publisher tells the node registry after every reconcile pass; Publish
// does nothing until a node is set (and with bbolt, ever).
type publisher struct {
	node interface{ Publish() }
}

// Publish asks the registered node to publish its status soon.
func (p *publisher) Publish() {
	if p.node != nil {
		p.node.Publish()
	}
}
