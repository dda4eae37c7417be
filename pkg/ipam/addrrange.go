package ipam

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"
)

// addrRange is an inclusive span of addresses of one family. Pools keep spans
// rather than address lists so a /64 costs two addresses, not 2^64 entries.
type addrRange struct {
	first, last netip.Addr
}

// parseRange reads a CIDR ("10.0.0.0/24") or a range ("10.0.0.10-10.0.0.20").
func parseRange(s string) (addrRange, error) {
	s = strings.TrimSpace(s)

	if from, to, ok := strings.Cut(s, "-"); ok {
		first, err := parseAddr(from)
		if err != nil {
			return addrRange{}, err
		}

		last, err := parseAddr(to)
		if err != nil {
			return addrRange{}, err
		}

		if first.Is4() != last.Is4() {
			return addrRange{}, fmt.Errorf("%s and %s are of different families", first, last)
		}

		if last.Less(first) {
			return addrRange{}, fmt.Errorf("%s comes after %s", first, last)
		}

		return addrRange{first, last}, nil
	}

	p, err := netip.ParsePrefix(s)
	if err != nil {
		return addrRange{}, fmt.Errorf("neither a CIDR nor a first-last range: %w", err)
	}

	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}

	p = p.Masked()

	return addrRange{p.Addr(), lastOf(p)}, nil
}

// parseAddr reads one address, unmapping IPv4-mapped IPv6 so that
// "::ffff:10.0.0.1" and "10.0.0.1" are the same service IP.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, err
	}

	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%s has a zone, which a service IP cannot have", a)
	}

	return a.Unmap(), nil
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}

	a, _ := netip.AddrFromSlice(b)

	return a
}

func (r addrRange) family() Family { return FamilyOf(r.first) }

func (r addrRange) contains(a netip.Addr) bool {
	return a.BitLen() == r.first.BitLen() && r.first.Compare(a) <= 0 && a.Compare(r.last) <= 0
}

func (r addrRange) overlaps(o addrRange) bool {
	return r.family() == o.family() && r.first.Compare(o.last) <= 0 && o.first.Compare(r.last) <= 0
}

func (r addrRange) String() string {
	if r.first == r.last {
		return r.first.String()
	}

	return r.first.String() + "-" + r.last.String()
}

// size counts the addresses a pool may hand out from the range.
func (r addrRange) size(avoidBuggy bool) *big.Int {
	n := new(big.Int).Sub(addrInt(r.last), addrInt(r.first))
	n.Add(n, big.NewInt(1))

	if avoidBuggy && r.first.Is4() {
		first, last := int64(addrInt(r.first).Uint64()), int64(addrInt(r.last).Uint64())
		for _, octet := range []int64{0, 255} {
			n.Sub(n, big.NewInt(endingIn(last, octet)-endingIn(first-1, octet)))
		}
	}

	return n
}

// endingIn counts the IPv4 addresses in [0, n] whose last octet is octet.
func endingIn(n, octet int64) int64 {
	if n < octet {
		return 0
	}

	return (n-octet)/256 + 1
}

func addrInt(a netip.Addr) *big.Int {
	return new(big.Int).SetBytes(a.AsSlice())
}

// buggy says whether old firmware may mistake a as a network or broadcast
// address; pools with AvoidBuggyIPs never hand these out.
func buggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}

	last := a.As4()[3]

	return last == 0 || last == 255
}
