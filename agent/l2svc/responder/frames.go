package responder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

var (
	allNodes    = netip.IPv6LinkLocalAllNodes()
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
)

const (
	ipv6HeaderLen = 40
	// Neighbour discovery messages must arrive with hop limit 255 (RFC 4861):
	// proof they were not routed.
	ndHopLimit = 255
)

// arpReplyFor answers an ARP request for one of owned; nil when it asks for
// something else or is no plain request (a gratuitous ARP of another node).
func arpReplyFor(frame []byte, mac net.HardwareAddr, owned func(netip.Addr) bool) ([]byte, net.HardwareAddr, error) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil {
		return nil, nil, err
	}

	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return nil, nil, err
	}

	if p.Operation != arp.OperationRequest || !owned(p.TargetIP) || p.SenderIP == p.TargetIP {
		return nil, nil, nil
	}

	// An address probe (RFC 5227, sender 0.0.0.0) is answered too: it tells
	// the prober the address is taken.
	reply, err := arp.NewPacket(arp.OperationReply, mac, p.TargetIP, p.SenderHardwareAddr, p.SenderIP)
	if err != nil {
		return nil, nil, err
	}

	out, err := arpFrame(reply, mac, p.SenderHardwareAddr)

	return out, p.SenderHardwareAddr, err
}

// gratuitousARP moves existing neighbour entries for ip to mac: a request
// with sender and target both ip, to broadcast, which nobody answers.
func gratuitousARP(ip netip.Addr, mac net.HardwareAddr) ([]byte, error) {
	p, err := arp.NewPacket(arp.OperationRequest, mac, ip, ethernet.Broadcast, ip)
	if err != nil {
		return nil, err
	}

	return arpFrame(p, mac, ethernet.Broadcast)
}

func arpFrame(p *arp.Packet, src, dst net.HardwareAddr) ([]byte, error) {
	pb, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}

	f := ethernet.Frame{Destination: dst, Source: src, EtherType: ethernet.EtherTypeARP, Payload: pb}

	return f.MarshalBinary()
}

// naReplyFor answers a neighbour solicitation for one of owned with a
// solicited advertisement from the address itself; nil when it asks for
// something else.
func naReplyFor(frame []byte, mac net.HardwareAddr, owned func(netip.Addr) bool) ([]byte, net.HardwareAddr, error) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil {
		return nil, nil, err
	}

	src, dst, icmp, err := parseIPv6ICMP(f.Payload)
	if err != nil {
		return nil, nil, err
	}

	m, err := ndp.ParseMessage(icmp)
	if err != nil {
		return nil, nil, err
	}

	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok || !owned(ns.TargetAddress) {
		return nil, nil, nil
	}

	if err := checkICMPv6(src, dst, icmp); err != nil {
		return nil, nil, err
	}

	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ns.TargetAddress,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}

	to, toMAC := src, f.Source

	if src.IsUnspecified() {
		// Duplicate address detection by someone else: tell every node.
		to, toMAC = allNodes, allNodesMAC
	} else {
		na.Solicited = true

		for _, o := range ns.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Source {
				toMAC = lla.Addr
			}
		}
	}

	out, err := ndFrame(na, ns.TargetAddress, to, mac, toMAC)

	return out, toMAC, err
}

// unsolicitedNA moves existing neighbour entries for ip to mac. Its source is
// ip itself: some clients (ndisc6) ignore advertisements from another source.
func unsolicitedNA(ip netip.Addr, mac net.HardwareAddr) ([]byte, error) {
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}

	return ndFrame(na, ip, allNodes, mac, allNodesMAC)
}

func ndFrame(m ndp.Message, src, dst netip.Addr, srcMAC, dstMAC net.HardwareAddr) ([]byte, error) {
	icmp, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		return nil, err
	}

	pkt := make([]byte, ipv6HeaderLen+len(icmp))
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:6], uint16(len(icmp))) //nolint:gosec // a few dozen bytes
	pkt[6] = 58                                             // ICMPv6
	pkt[7] = ndHopLimit
	s, d := src.As16(), dst.As16()
	copy(pkt[8:24], s[:])
	copy(pkt[24:40], d[:])
	copy(pkt[40:], icmp)

	f := ethernet.Frame{Destination: dstMAC, Source: srcMAC, EtherType: ethernet.EtherTypeIPv6, Payload: pkt}

	return f.MarshalBinary()
}

// parseIPv6ICMP returns source, destination and ICMPv6 message of an IPv6
// packet carrying ICMPv6 directly, with hop limit 255.
func parseIPv6ICMP(pkt []byte) (netip.Addr, netip.Addr, []byte, error) {
	if len(pkt) < ipv6HeaderLen || pkt[0]>>4 != 6 {
		return netip.Addr{}, netip.Addr{}, nil, errors.New("not an IPv6 packet")
	}

	plen := int(binary.BigEndian.Uint16(pkt[4:6]))
	if pkt[6] != 58 || pkt[7] != ndHopLimit || len(pkt) < ipv6HeaderLen+plen {
		return netip.Addr{}, netip.Addr{}, nil, errors.New("not a neighbour discovery packet")
	}

	src := netip.AddrFrom16([16]byte(pkt[8:24]))
	dst := netip.AddrFrom16([16]byte(pkt[24:40]))

	return src, dst, pkt[ipv6HeaderLen : ipv6HeaderLen+plen], nil
}

// checkICMPv6 verifies the ICMPv6 checksum (the kernel has not: the packet
// may not even be addressed to this host).
func checkICMPv6(src, dst netip.Addr, icmp []byte) error {
	var sum uint32

	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}

		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}

	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])

	var lenNext [8]byte
	binary.BigEndian.PutUint32(lenNext[0:4], uint32(len(icmp))) //nolint:gosec // a packet
	lenNext[7] = 58
	add(lenNext[:])
	add(icmp)

	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}

	if sum != 0xffff {
		return fmt.Errorf("bad ICMPv6 checksum from %s", src)
	}

	return nil
}
