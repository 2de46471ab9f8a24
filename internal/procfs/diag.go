package procfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"
)

// The kernel's socket tables can also be asked through sock_diag
// (NETLINK_SOCK_DIAG, what `ss` uses) for the sockets in given states
// only: the listening ones are found from the kernel's listening hash, in
// binary, where /proc/net/tcp prints every socket of the host as text
// (~3 µs each: 30-60 ms with 10,000 streams). Accepting on Host uses it,
// and the /proc tables where the kernel does not answer it.

const (
	netlinkSockDiag  = 4  // NETLINK_SOCK_DIAG
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	stateEstablished = 1  // TCP_ESTABLISHED
	stateListen      = 10 // TCP_LISTEN
	stateClose       = 7  // TCP_CLOSE: a bound, unconnected UDP socket
	diagMsgLen       = 72 // struct inet_diag_msg
)

// inetDiagReq is struct inet_diag_req_v2.
type inetDiagReq struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	Pad      uint8
	States   uint32
	ID       [48]byte // struct inet_diag_sockid, zero: every socket
}

// diagStates returns every socket of protocol proto (IPPROTO_TCP or
// IPPROTO_UDP) in one of states (a bit per state) of our network
// namespace, IPv4 and IPv6: all of them, or an error.
func diagStates(proto uint8, states uint32) ([]Socket, error) {
	var all []Socket
	add := func(s Socket) { all = append(all, s) }
	for _, family := range []uint8{syscall.AF_INET, syscall.AF_INET6} {
		if err := diagDump(inetDiagReq{Family: family, Protocol: proto, States: states}, add); err != nil {
			return nil, err
		}
	}
	return all, nil
}

// diagAccepting returns every listening TCP socket (udp false) or bound,
// unconnected UDP socket (udp true) of our network namespace, IPv4 and
// IPv6: all of them, or an error.
func diagAccepting(udp bool) ([]Socket, error) {
	if udp {
		return diagStates(syscall.IPPROTO_UDP, 1<<stateClose)
	}
	return diagStates(syscall.IPPROTO_TCP, 1<<stateListen)
}

// diagDump sends one dump request and calls fn with every socket the
// kernel answers.
func diagDump(req inetDiagReq, fn func(Socket)) error {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, netlinkSockDiag)
	if err != nil {
		return fmt.Errorf("sock_diag socket: %w", err)
	}
	defer syscall.Close(fd)
	const hdrLen = syscall.SizeofNlMsghdr
	msg := make([]byte, hdrLen+int(unsafe.Sizeof(req)))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], sockDiagByFamily)
	binary.NativeEndian.PutUint16(msg[6:8], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(msg[8:12], 1)
	copy(msg[hdrLen:], unsafe.Slice((*byte)(unsafe.Pointer(&req)), unsafe.Sizeof(req)))
	if err := syscall.Sendto(fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				return nil
			case syscall.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := -int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
						return fmt.Errorf("sock_diag: %w", syscall.Errno(errno))
					}
				}
				return errors.New("sock_diag: error answer")
			}
			if len(m.Data) < diagMsgLen {
				continue
			}
			port := binary.BigEndian.Uint16(m.Data[4:6])
			inode := binary.NativeEndian.Uint32(m.Data[68:72])
			fn(Socket{Port: int(port), Inode: strconv.FormatUint(uint64(inode), 10), Addr: diagAddr(m.Data)})
		}
	}
}

// diagAddr is the local address of a struct inet_diag_msg: its family
// (idiag_family, the first byte), then idiag_src at offset 8 of the
// socket id, 4 bytes for IPv4 and 16 for IPv6 (IPv4-mapped unmapped).
func diagAddr(msg []byte) netip.Addr {
	src := msg[8:24]
	if msg[0] == syscall.AF_INET {
		src = src[:4]
	}
	a, _ := netip.AddrFromSlice(src)
	return a.Unmap()
}
