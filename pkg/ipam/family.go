package ipam

import (
	"fmt"
	"net/netip"
)

// Family is an IP address family.
type Family uint8

// The families, as Kubernetes spells them in spec.ipFamilies.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	default:
		return fmt.Sprintf("Family(%d)", uint8(f))
	}
}

// FamilyOf says which family an address belongs to; IPv4-mapped IPv6 addresses
// are expected to be unmapped by the parser first.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}

	return IPv6
}

// FamilyPolicy mirrors a Service's spec.ipFamilyPolicy.
type FamilyPolicy uint8

// The policies: SingleStack takes the first listed family only,
// PreferDualStack takes every listed family it can get (at least one), and
// RequireDualStack takes both or nothing.
const (
	SingleStack FamilyPolicy = iota
	PreferDualStack
	RequireDualStack
)

func (p FamilyPolicy) String() string {
	switch p {
	case SingleStack:
		return "SingleStack"
	case PreferDualStack:
		return "PreferDualStack"
	case RequireDualStack:
		return "RequireDualStack"
	default:
		return fmt.Sprintf("FamilyPolicy(%d)", uint8(p))
	}
}
