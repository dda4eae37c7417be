package responder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Ethernet protocol numbers (linux/if_ether.h).
const (
	ethPARP  = 0x0806
	ethPIPv6 = 0x86dd
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Classic BPF filters, so the kernel copies only the frames the responder
// answers, not every IPv6 packet the node receives.
var (
	// ARP requests: EtherType ARP, operation 1.
	arpRequestFilter = []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 12},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 3, K: ethPARP},
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 20},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	// Neighbour solicitations: IPv6, next header ICMPv6 (58) without
	// extension headers, ICMPv6 type 135.
	neighborSolicitationFilter = []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 12},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 5, K: ethPIPv6},
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 20},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 3, K: unix.IPPROTO_ICMPV6},
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 54},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: 135},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
)

// packetSocket is an AF_PACKET socket bound to one interface and one
// EtherType. It sees frames before the IP stack does, so it also gets the
// unicast NUD probes the kernel drops for an address it does not have
// (a raw ICMPv6 socket never sees those). It reads through Go's poller, so
// Close ends a blocked read.
type packetSocket struct {
	f       *os.File
	rc      syscall.RawConn
	ifindex int
	proto   uint16
}

// maxAge is how long a frame may have waited in the socket before it is
// dropped unanswered. Frames wait that long only when the agent was frozen or
// starved, and ownership may have moved meanwhile: a late answer would point
// the asker back at this node.
const maxAge = time.Second

func openPacket(ifindex int, proto uint16, filter []unix.SockFilter) (*packetSocket, error) {
	// Protocol 0 until bound: no frame arrives before the filter is in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening packet socket: %w", err)
	}

	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]} //nolint:gosec // a handful of instructions

	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		unix.Close(fd) //nolint:errcheck

		return nil, fmt.Errorf("attaching packet filter: %w", err)
	}

	// Arrival stamps (see maxAge); best effort: without them (kernels before
	// 5.1) every frame is answered.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW, 1) //nolint:errcheck

	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}); err != nil {
		unix.Close(fd) //nolint:errcheck

		return nil, fmt.Errorf("binding packet socket: %w", err)
	}

	f := os.NewFile(uintptr(fd), "packet") //nolint:gosec // a descriptor is never negative

	rc, err := f.SyscallConn()
	if err != nil {
		f.Close() //nolint:errcheck

		return nil, err
	}

	return &packetSocket{f: f, rc: rc, ifindex: ifindex, proto: proto}, nil
}

// read reads one frame that arrived from the wire (never one this host sent)
// no longer than maxAge ago; stale counts the frames dropped as too old.
func (s *packetSocket) read(buf []byte, stale func()) (int, error) {
	var oob [64]byte

	for {
		var (
			n, oobn int
			from    unix.Sockaddr
			rerr    error
		)

		if err := s.rc.Read(func(fd uintptr) bool {
			n, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf, oob[:], 0)

			return !errors.Is(rerr, unix.EAGAIN)
		}); err != nil {
			return 0, err
		}

		if rerr != nil {
			return 0, rerr
		}

		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}

		if at, ok := arrival(oob[:oobn]); ok && time.Since(at) > maxAge {
			stale()

			continue
		}

		return n, nil
	}
}

// arrival is the kernel's receive stamp among a frame's control messages.
func arrival(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}

	for _, m := range msgs {
		// struct __kernel_timespec: two 64-bit fields on every architecture.
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS_NEW && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))   //nolint:gosec // a time
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16])) //nolint:gosec // a time

			return time.Unix(sec, nsec), true
		}
	}

	return time.Time{}, false
}

// write sends one whole Ethernet frame.
func (s *packetSocket) write(frame []byte, dst net.HardwareAddr) error {
	to := &unix.SockaddrLinklayer{Protocol: htons(s.proto), Ifindex: s.ifindex, Halen: uint8(len(dst))} //nolint:gosec // 6
	copy(to.Addr[:], dst)

	var werr error

	if err := s.rc.Write(func(fd uintptr) bool {
		werr = unix.Sendto(int(fd), frame, 0, to)

		return !errors.Is(werr, unix.EAGAIN)
	}); err != nil {
		return err
	}

	return werr
}

func (s *packetSocket) close() error {
	return s.f.Close()
}

// groupSocket holds the solicited-node multicast memberships of the
// addresses answered on one interface: the kernel then programs the NIC's
// multicast filter and sends MLD reports (so snooping switches forward the
// solicitations), as it does for its own addresses.
type groupSocket struct {
	fd      int
	ifindex int
	refs    map[netip.Addr]int
}

func openGroups(ifindex int) (*groupSocket, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("opening multicast membership socket: %w", err)
	}

	return &groupSocket{fd: fd, ifindex: ifindex, refs: map[netip.Addr]int{}}, nil
}

// solicitedNode is ff02::1:ffXX:XXXX for ip.
func solicitedNode(ip netip.Addr) netip.Addr {
	a := ip.As16()

	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: a[13], 14: a[14], 15: a[15]})
}

func (g *groupSocket) join(ip netip.Addr) error {
	group := solicitedNode(ip)
	if g.refs[group] > 0 {
		g.refs[group]++

		return nil
	}

	mreq := &unix.IPv6Mreq{Multiaddr: group.As16(), Interface: uint32(g.ifindex)} //nolint:gosec // an index is small
	if err := unix.SetsockoptIPv6Mreq(g.fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq); err != nil {
		return fmt.Errorf("joining %s: %w", group, err)
	}

	g.refs[group] = 1

	return nil
}

func (g *groupSocket) leave(ip netip.Addr) {
	group := solicitedNode(ip)

	switch g.refs[group] {
	case 0:
		return
	case 1:
		mreq := &unix.IPv6Mreq{Multiaddr: group.As16(), Interface: uint32(g.ifindex)} //nolint:gosec // an index is small
		unix.SetsockoptIPv6Mreq(g.fd, unix.IPPROTO_IPV6, unix.IPV6_LEAVE_GROUP, mreq) //nolint:errcheck // closing drops it anyway
		delete(g.refs, group)
	default:
		g.refs[group]--
	}
}

func (g *groupSocket) close() error {
	return unix.Close(g.fd)
}
