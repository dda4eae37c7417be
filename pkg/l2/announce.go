// Package l2 speaks to the local Ethernet segment: gratuitous ARP and
// unsolicited IPv6 neighbour advertisements that move clients' and routers'
// neighbour entries to this node when it takes an address over.
package l2

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// Announcer tells the segment that ip now lives at this node's link.
type Announcer interface {
	Announce(link string, ip netip.Addr) error
}

// RawAnnouncer sends real frames: a gratuitous ARP request for IPv4, an
// unsolicited neighbour advertisement with the override flag for IPv6.
type RawAnnouncer struct{}

// Announce implements Announcer. The address must already be on the link:
// both the ARP client and the ICMPv6 socket bind to it.
func (RawAnnouncer) Announce(link string, ip netip.Addr) error {
	ifi, err := net.InterfaceByName(link)
	if err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}

	if ip.Is4() {
		return gratuitousARP(ifi, ip)
	}

	return unsolicitedNA(ifi, ip)
}

func gratuitousARP(ifi *net.Interface, ip netip.Addr) error {
	c, err := arp.Dial(ifi)
	if err != nil {
		return fmt.Errorf("opening ARP socket on %s: %w", ifi.Name, err)
	}
	defer c.Close() //nolint:errcheck

	// Sender and target are both the address: receivers update an existing
	// entry for it, and nobody answers.
	p, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, ip, ethernet.Broadcast, ip)
	if err != nil {
		return fmt.Errorf("building gratuitous ARP for %s: %w", ip, err)
	}

	if err := c.WriteTo(p, ethernet.Broadcast); err != nil {
		return fmt.Errorf("sending gratuitous ARP for %s on %s: %w", ip, ifi.Name, err)
	}

	return nil
}

func unsolicitedNA(ifi *net.Interface, ip netip.Addr) error {
	// The source must be the address itself: some clients (ndisc6) ignore
	// advertisements whose source differs from the target.
	c, _, err := ndp.Listen(ifi, ndp.Addr(ip.String()))
	if err != nil {
		return fmt.Errorf("opening ICMPv6 socket on %s from %s: %w", ifi.Name, ip, err)
	}
	defer c.Close() //nolint:errcheck

	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifi.HardwareAddr}},
	}

	if err := c.WriteTo(na, nil, netip.IPv6LinkLocalAllNodes()); err != nil {
		return fmt.Errorf("sending neighbour advertisement for %s on %s: %w", ip, ifi.Name, err)
	}

	return nil
}
