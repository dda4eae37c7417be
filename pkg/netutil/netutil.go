// Package netutil holds the netlink plumbing every side-effect package shares.
// Handles are opened for NETLINK_ROUTE only: a bare netlink.NewHandle() also
// opens XFRM and netfilter sockets and fails on minimal kernels.
package netutil

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NewHandle opens a netlink handle for routing messages only.
func NewHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink route handle: %w", err)
	}

	return h, nil
}

// AddressSource lists the node's addresses and says when they change.
type AddressSource interface {
	// Addresses returns the global unicast addresses with their prefix length, sorted.
	Addresses() ([]netip.Prefix, error)
	// Watch sends on changed (without blocking) whenever addresses may have
	// changed, until ctx ends; and once as soon as it is subscribed, since a
	// change between the caller's first read and the subscription would
	// otherwise go unheard.
	Watch(ctx context.Context, changed chan<- struct{}) error
}

// NetlinkAddresses is the AddressSource of the agent's network namespace.
type NetlinkAddresses struct{}

// Addresses implements AddressSource.
func (NetlinkAddresses) Addresses() ([]netip.Prefix, error) {
	h, err := NewHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()

	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}

	out := make([]netip.Prefix, 0, len(addrs))

	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}

		ip = ip.Unmap()
		if !ip.IsGlobalUnicast() {
			continue
		}

		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}

	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })

	return slices.Compact(out), nil
}

// Watch implements AddressSource.
func (NetlinkAddresses) Watch(ctx context.Context, changed chan<- struct{}) error {
	updates := make(chan netlink.AddrUpdate, 16)

	if err := netlink.AddrSubscribeWithOptions(updates, ctx.Done(), netlink.AddrSubscribeOptions{
		ErrorCallback: func(error) {},
	}); err != nil {
		return fmt.Errorf("subscribing to address changes: %w", err)
	}

	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}

	notify()

	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-updates:
			if !ok {
				return fmt.Errorf("address subscription closed")
			}

			notify()
		}
	}
}
