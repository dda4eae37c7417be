package netutil

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNoLink says a link does not exist.
var ErrNoLink = errors.New("link does not exist")

// Links reads and changes the addresses of links.
type Links interface {
	// Addresses lists a link's addresses; ErrNoLink when there is no such link.
	Addresses(link string) ([]netip.Prefix, error)
	AddAddress(link string, p netip.Prefix) error
	RemoveAddress(link string, p netip.Prefix) error
}

// NetlinkLinks is Links of the agent's network namespace.
type NetlinkLinks struct{}

func withLink(name string, fn func(h *netlink.Handle, l netlink.Link) error) error {
	h, err := NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()

	l, err := h.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return fmt.Errorf("%s: %w", name, ErrNoLink)
		}

		return fmt.Errorf("looking up link %s: %w", name, err)
	}

	return fn(h, l)
}

// Addresses implements Links.
func (NetlinkLinks) Addresses(link string) ([]netip.Prefix, error) {
	var out []netip.Prefix

	err := withLink(link, func(h *netlink.Handle, l netlink.Link) error {
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("listing addresses of %s: %w", link, err)
		}

		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				ones, _ := a.Mask.Size()
				out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
			}
		}

		return nil
	})

	return out, err
}

func addr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: PrefixIPNet(p)}
	if p.Addr().Is6() {
		// Duplicate address detection would hold the VIP "tentative" (unusable)
		// for a second or more; the election already guarantees uniqueness.
		a.Flags = unix.IFA_F_NODAD
	}

	return a
}

// AddAddress implements Links.
func (NetlinkLinks) AddAddress(link string, p netip.Prefix) error {
	return withLink(link, func(h *netlink.Handle, l netlink.Link) error {
		if err := h.AddrAdd(l, addr(p)); err != nil {
			return fmt.Errorf("adding %s to %s: %w", p, link, err)
		}

		return nil
	})
}

// RemoveAddress implements Links; an address already gone is not an error.
func (NetlinkLinks) RemoveAddress(link string, p netip.Prefix) error {
	return withLink(link, func(h *netlink.Handle, l netlink.Link) error {
		if err := h.AddrDel(l, addr(p)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("removing %s from %s: %w", p, link, err)
		}

		return nil
	})
}

// PrefixIPNet converts a prefix to the net.IPNet netlink wants.
func PrefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// SourceFor is the address the kernel would use as source toward dst.
func SourceFor(dst netip.Addr) (netip.Addr, error) {
	h, err := NewHandle()
	if err != nil {
		return netip.Addr{}, err
	}
	defer h.Close()

	routes, err := h.RouteGet(dst.AsSlice())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route to %s: %w", dst, err)
	}

	for _, r := range routes {
		if src, ok := netip.AddrFromSlice(r.Src); ok && src.IsValid() && !src.IsUnspecified() {
			return src.Unmap(), nil
		}
	}

	return netip.Addr{}, fmt.Errorf("no source address toward %s", dst)
}
