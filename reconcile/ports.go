package reconcile

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// Ports is how the reconciler looks at the host's sockets: whether a
// stream's address is free, and which ports have listeners. The default,
// HostPorts, asks the kernel; tests substitute their own.
type Ports interface {
	// BindConflict returns nil when nginx could bind s's listen address,
	// and otherwise why not: an error worded like nginx's bind() message.
	BindConflict(s stream.Spec, defaultBind string) error
	// Listening returns the ports with a listening socket for p.
	Listening(p stream.Protocol) (map[int]bool, error)
}

// HostPorts is Ports on this host's network stack.
type HostPorts struct{}

// BindConflict probes the address by binding it.
func (HostPorts) BindConflict(s stream.Spec, defaultBind string) error {
	return probeBind(s, defaultBind)
}

// Listening reads /proc/net.
func (HostPorts) Listening(p stream.Protocol) (map[int]bool, error) { return listening(p) }

// probeBind tries to bind the address nginx would bind for s. It returns
// nil when the address is free, and otherwise an error worded like nginx's
// own bind() message, so that a stream's status reads the same whichever
// caught the conflict first.
func probeBind(s stream.Spec, defaultBind string) error {
	if s.IsRange() {
		return probeRange(s, defaultBind)
	}
	ap := s.ListenAddr(defaultBind)
	network, addr := string(s.Protocol)+"4", ap.String()
	if ap.Addr().Is6() {
		network = string(s.Protocol) + "6"
	}
	var err error
	if s.Protocol == stream.UDP {
		var c net.PacketConn
		if c, err = net.ListenPacket(network, addr); err == nil {
			c.Close()
		}
	} else {
		var l net.Listener
		if l, err = net.Listen(network, addr); err == nil {
			l.Close()
		}
	}
	if err == nil {
		return nil
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		msg := errno.Error()
		return fmt.Errorf("bind() to %s failed (%d: %s%s)", addr, int(errno), strings.ToUpper(msg[:1]), msg[1:])
	}
	return fmt.Errorf("bind() to %s failed (%v)", addr, err)
}

// probeRange probes every port of a range: the error of the first port
// another process holds, worded like nginx's, and every held port.
func probeRange(s stream.Spec, defaultBind string) error {
	var first error
	var held []string
	one := s
	one.ListenEnd = 0
	for port := s.Listen; port <= s.LastPort(); port++ {
		one.Listen = port
		if err := probeBind(one, defaultBind); err != nil {
			if first == nil {
				first = err
			}
			held = append(held, strconv.Itoa(port))
		}
	}
	if first == nil {
		return nil
	}
	if len(held) == 1 {
		return first
	}
	return fmt.Errorf("%w; %d ports of %s are held: %s", first, len(held), s.Ports(), strings.Join(held, ", "))
}

// portsAdded returns the ports of s, which nginx serves from its file in
// onDisk, that the file does not listen on yet (a range that grows), as
// a spec of their own, and whether there are any.
func (r *Reconciler) portsAdded(s stream.Spec, onDisk map[string][]byte) (stream.Spec, bool) {
	body, ok := onDisk[nginxconf.FileName(r.cfg.Render.Prefix, s.ID())]
	if !ok {
		return s, false
	}
	last := nginxconf.FileLastPort(body, s.Listen)
	if s.LastPort() <= last {
		return s, false
	}
	probe := s
	probe.Listen = last + 1
	if probe.ListenEnd == probe.Listen {
		probe.ListenEnd = 0
	}
	return probe, true
}

// listening returns the ports that have an accepting socket of protocol
// p. Verifying a reload by the kernel's socket table, rather than by
// connecting, opens no session to any backend.
func listening(p stream.Protocol) (map[int]bool, error) {
	ports := make(map[int]bool)
	err := procfs.Host.Accepting(p == stream.UDP, func(s procfs.Socket) { ports[s.Port] = true })
	return ports, err
}

// idsOf returns the stream ids of our file names.
func idsOf(prefix string, files map[string][]byte) map[stream.ID]bool {
	ids := make(map[stream.ID]bool, len(files))
	for name := range files {
		if id, ok := nginxconf.ParseFileName(prefix, name); ok {
			ids[id] = true
		}
	}
	return ids
}

// portOwners maps each port of each protocol to the stream that listens
// on it: a range's every port to its id.
type portOwners map[stream.Protocol]map[int]stream.ID

// add records the ports first to last as id's.
func (o portOwners) add(id stream.ID, last int) {
	if o[id.Protocol] == nil {
		o[id.Protocol] = map[int]stream.ID{}
	}
	for port := id.Port; port <= max(id.Port, last); port++ {
		o[id.Protocol][port] = id
	}
}

// fileOwners are the ports of the stream files in files.
func fileOwners(prefix string, files map[string][]byte) portOwners {
	o := portOwners{}
	for name, body := range files {
		if id, ok := nginxconf.ParseFileName(prefix, name); ok {
			o.add(id, nginxconf.FileLastPort(body, id.Port))
		}
	}
	return o
}
