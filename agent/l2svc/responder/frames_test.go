package responder

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

var (
	ourMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
	vip4      = netip.MustParseAddr("10.5.0.100")
	vip6      = netip.MustParseAddr("fd05::100")
	client4   = netip.MustParseAddr("10.5.0.254")
	client6   = netip.MustParseAddr("fd05::fe")
)

func ownedOnly(ips ...netip.Addr) func(netip.Addr) bool {
	return func(ip netip.Addr) bool {
		for _, o := range ips {
			if o == ip {
				return true
			}
		}

		return false
	}
}

func arpRequest(t *testing.T, senderIP, target netip.Addr) []byte {
	t.Helper()

	p, err := arp.NewPacket(arp.OperationRequest, clientMAC, senderIP, ethernet.Broadcast, target)
	require.NoError(t, err)

	f, err := arpFrame(p, clientMAC, ethernet.Broadcast)
	require.NoError(t, err)

	return f
}

func TestARPReply(t *testing.T) {
	out, dst, err := arpReplyFor(arpRequest(t, client4, vip4), ourMAC, ownedOnly(vip4))
	require.NoError(t, err)
	require.Equal(t, clientMAC, dst)

	var f ethernet.Frame
	require.NoError(t, f.UnmarshalBinary(out))
	require.Equal(t, clientMAC, f.Destination)
	require.Equal(t, ourMAC, f.Source)
	require.Equal(t, ethernet.EtherTypeARP, f.EtherType)

	var p arp.Packet
	require.NoError(t, p.UnmarshalBinary(f.Payload))
	require.Equal(t, arp.OperationReply, p.Operation)
	require.Equal(t, vip4, p.SenderIP)
	require.Equal(t, ourMAC, p.SenderHardwareAddr)
	require.Equal(t, client4, p.TargetIP)
	require.Equal(t, clientMAC, p.TargetHardwareAddr)

	// Another address, or a gratuitous ARP: no answer.
	out, _, err = arpReplyFor(arpRequest(t, client4, netip.MustParseAddr("10.5.0.101")), ourMAC, ownedOnly(vip4))
	require.NoError(t, err)
	require.Nil(t, out)

	out, _, err = arpReplyFor(arpRequest(t, vip4, vip4), ourMAC, ownedOnly(vip4))
	require.NoError(t, err)
	require.Nil(t, out)

	// A probe (sender 0.0.0.0) learns the address is taken.
	out, _, err = arpReplyFor(arpRequest(t, netip.IPv4Unspecified(), vip4), ourMAC, ownedOnly(vip4))
	require.NoError(t, err)
	require.NotNil(t, out)
}

func TestGratuitousARP(t *testing.T) {
	out, err := gratuitousARP(vip4, ourMAC)
	require.NoError(t, err)

	var f ethernet.Frame
	require.NoError(t, f.UnmarshalBinary(out))
	require.Equal(t, ethernet.Broadcast, f.Destination)

	var p arp.Packet
	require.NoError(t, p.UnmarshalBinary(f.Payload))
	require.Equal(t, arp.OperationRequest, p.Operation)
	require.Equal(t, vip4, p.SenderIP)
	require.Equal(t, vip4, p.TargetIP)
	require.Equal(t, ourMAC, p.SenderHardwareAddr)
}

func solicitation(t *testing.T, src, dst, target netip.Addr, withLLA bool, hopLimit byte) []byte {
	t.Helper()

	ns := &ndp.NeighborSolicitation{TargetAddress: target}
	if withLLA {
		ns.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: clientMAC}}
	}

	frame, err := ndFrame(ns, src, dst, clientMAC, net.HardwareAddr{0x33, 0x33, 0xff, 0, 0x01, 0})
	require.NoError(t, err)

	frame[14+7] = hopLimit

	return frame
}

func parseNA(t *testing.T, frame []byte) (ethernet.Frame, netip.Addr, netip.Addr, *ndp.NeighborAdvertisement) {
	t.Helper()

	var f ethernet.Frame
	require.NoError(t, f.UnmarshalBinary(frame))
	require.Equal(t, ethernet.EtherTypeIPv6, f.EtherType)

	src, dst, icmp, err := parseIPv6ICMP(f.Payload)
	require.NoError(t, err)
	require.NoError(t, checkICMPv6(src, dst, icmp))

	m, err := ndp.ParseMessage(icmp)
	require.NoError(t, err)

	na, ok := m.(*ndp.NeighborAdvertisement)
	require.True(t, ok, "%T", m)

	return f, src, dst, na
}

func TestNeighborAdvertisementReply(t *testing.T) {
	solicitedNodeGroup := solicitedNode(vip6)
	require.Equal(t, netip.MustParseAddr("ff02::1:ff00:100"), solicitedNodeGroup)

	out, dst, err := naReplyFor(solicitation(t, client6, solicitedNodeGroup, vip6, true, 255), ourMAC, ownedOnly(vip6))
	require.NoError(t, err)
	require.Equal(t, clientMAC, dst)

	f, src, to, na := parseNA(t, out)
	require.Equal(t, clientMAC, f.Destination)
	require.Equal(t, ourMAC, f.Source)
	require.Equal(t, vip6, src, "sent from the address itself")
	require.Equal(t, client6, to)
	require.True(t, na.Solicited)
	require.True(t, na.Override)
	require.Equal(t, vip6, na.TargetAddress)
	require.Equal(t, []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ourMAC}}, na.Options)

	// A unicast NUD probe carries no source link-layer address: answer the frame's source.
	out, dst, err = naReplyFor(solicitation(t, client6, vip6, vip6, false, 255), ourMAC, ownedOnly(vip6))
	require.NoError(t, err)
	require.Equal(t, clientMAC, dst)
	require.NotNil(t, out)

	// Duplicate address detection: tell all nodes, unsolicited.
	out, dst, err = naReplyFor(solicitation(t, netip.IPv6Unspecified(), solicitedNodeGroup, vip6, false, 255), ourMAC, ownedOnly(vip6))
	require.NoError(t, err)
	require.Equal(t, allNodesMAC, dst)

	_, _, to, na = parseNA(t, out)
	require.Equal(t, allNodes, to)
	require.False(t, na.Solicited)

	// Not ours, routed (hop limit below 255), or corrupt: no answer.
	out, _, err = naReplyFor(solicitation(t, client6, solicitedNodeGroup, netip.MustParseAddr("fd05::101"), true, 255), ourMAC, ownedOnly(vip6))
	require.NoError(t, err)
	require.Nil(t, out)

	out, _, err = naReplyFor(solicitation(t, client6, solicitedNodeGroup, vip6, true, 64), ourMAC, ownedOnly(vip6))
	require.Error(t, err)
	require.Nil(t, out)

	bad := solicitation(t, client6, solicitedNodeGroup, vip6, true, 255)
	bad[len(bad)-1] ^= 0xff
	out, _, err = naReplyFor(bad, ourMAC, ownedOnly(vip6))
	require.Error(t, err)
	require.Nil(t, out)
}

func TestUnsolicitedNA(t *testing.T) {
	out, err := unsolicitedNA(vip6, ourMAC)
	require.NoError(t, err)

	f, src, dst, na := parseNA(t, out)
	require.Equal(t, allNodesMAC, f.Destination)
	require.Equal(t, vip6, src)
	require.Equal(t, allNodes, dst)
	require.True(t, na.Override)
	require.False(t, na.Solicited)
}

func TestArrivalStamp(t *testing.T) {
	at := time.Date(2026, 11, 27, 18, 0, 0, 123456789, time.UTC)

	b := make([]byte, unix.CmsgSpace(16))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW
	h.SetLen(unix.CmsgLen(16))
	binary.NativeEndian.PutUint64(b[unix.CmsgLen(0):], uint64(at.Unix()))
	binary.NativeEndian.PutUint64(b[unix.CmsgLen(0)+8:], uint64(at.Nanosecond()))

	got, ok := arrival(b)
	require.True(t, ok)
	require.True(t, got.Equal(at), "%v", got)

	_, ok = arrival(nil)
	require.False(t, ok, "no stamp: answered")
}
