package member

import (
	"errors"
	"net/netip"
)

// AdvertiseInputs are what the advertised address is chosen from when the
// config does not name it.
type AdvertiseInputs struct {
	// Listen is members.listen's host.
	Listen netip.Addr
	// Pushed is the address the controller pushed for this node (its Node's
	// InternalIP: where the other agents will join it); invalid if none yet.
	Pushed netip.Addr
	// Route returns the source address toward the default route of a family
	// (4 or 6); nil or an error when there is none.
	Route func(family int) (netip.Addr, error)
	// Addresses are the node's global unicast addresses, sorted.
	Addresses []netip.Prefix
}

// ChooseAdvertise picks the address the other agents reach this one on:
//
//  1. listen's host, when it is not a wildcard;
//  2. the address the controller pushed for this node;
//  3. the source address of the default route, IPv4 first;
//  4. the node's first address on a subnet (not a /32 or /128, which are
//     VIPs), IPv4 first.
//
// With listen on 0.0.0.0, only IPv4 addresses qualify. how says which rule
// decided, for the log.
func ChooseAdvertise(in AdvertiseInputs) (addr netip.Addr, how string, err error) {
	if in.Listen.IsValid() && !in.Listen.IsUnspecified() {
		return in.Listen.Unmap(), "listen address", nil
	}

	v4only := in.Listen.IsValid() && in.Listen.Is4()
	ok := func(a netip.Addr) bool {
		return a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && (a.Is4() || !v4only)
	}

	if p := in.Pushed.Unmap(); ok(p) {
		return p, "address pushed for this node", nil
	}

	if in.Route != nil {
		for _, family := range []int{4, 6} {
			if family == 6 && v4only {
				break
			}

			if a, err := in.Route(family); err == nil && ok(a.Unmap()) {
				return a.Unmap(), "source address of the default route", nil
			}
		}
	}

	for _, p := range in.Addresses {
		a := p.Addr().Unmap()
		if ok(a) && p.Bits() < a.BitLen() && !a.IsLinkLocalUnicast() {
			return a, "first address on a subnet", nil
		}
	}

	return netip.Addr{}, "", errors.New("no address to advertise to the other agents: set members.advertise")
}
