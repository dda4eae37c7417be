package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// ServiceKey identifies a Service.
type ServiceKey struct {
	Namespace, Name string
}

func (k ServiceKey) String() string { return k.Namespace + "/" + k.Name }

// Port is one port a Service exposes; two services on one IP collide when
// they share a protocol and a port number.
type Port struct {
	Protocol string // "TCP", "UDP" or "SCTP"
	Port     uint16
}

func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Protocol, p.Port) }

// Request is what a Service asks of the allocator.
type Request struct {
	Service ServiceKey
	// Families lists spec.ipFamilies in order; the first is the primary.
	Families []Family
	Policy   FamilyPolicy
	// IPs are the addresses the Service asks for (see RequestedIPs), at most
	// one per family; when set they replace automatic choice entirely.
	IPs []netip.Addr
	// Pool, when set, is the only pool to take addresses from; it may be one
	// with AutoAssign off.
	Pool string
	// SharingKey lets services with the same key share an IP when their ports
	// do not collide; empty means the service never shares.
	SharingKey string
	Ports      []Port
	// Labels and NamespaceLabels are what pool selectors match.
	Labels, NamespaceLabels map[string]string
}

// families says which families the request needs, in order, and whether
// every one of them is required (false: at least one will do).
func (r *Request) families() ([]Family, bool, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w for %s: %s", ErrInvalid, r.Service, fmt.Sprintf(format, args...))
	}

	if len(r.Families) == 0 || len(r.Families) > 2 {
		return nil, false, invalid("%d IP families listed, want 1 or 2", len(r.Families))
	}

	for _, f := range r.Families {
		if f != IPv4 && f != IPv6 {
			return nil, false, invalid("unknown IP family %s", f)
		}
	}

	if len(r.Families) == 2 && r.Families[0] == r.Families[1] {
		return nil, false, invalid("IP family %s listed twice", r.Families[0])
	}

	wanted := r.Families
	switch r.Policy {
	case SingleStack:
		wanted = r.Families[:1]
	case RequireDualStack:
		if len(r.Families) != 2 {
			return nil, false, invalid("RequireDualStack needs both IP families, only %s listed", r.Families[0])
		}
	case PreferDualStack:
	default:
		return nil, false, invalid("unknown IP family policy %s", r.Policy)
	}

	if len(r.IPs) == 0 {
		return wanted, r.Policy != PreferDualStack, nil
	}

	// Requested IPs pin the families: each must be wanted, each family once,
	// and RequireDualStack still needs both.
	var got []Family
	for _, ip := range r.IPs {
		f := FamilyOf(ip)
		if !slices.Contains(wanted, f) {
			return nil, false, invalid("requested %s is %s, but the service takes %v", ip, f, wanted)
		}

		if slices.Contains(got, f) {
			return nil, false, invalid("more than one %s address requested", f)
		}

		got = append(got, f)
	}

	if r.Policy == RequireDualStack && len(got) != 2 {
		return nil, false, invalid("RequireDualStack needs a requested IP of each family, got only %s", r.IPs[0])
	}

	slices.SortStableFunc(got, func(a, b Family) int {
		return slices.Index(r.Families, a) - slices.Index(r.Families, b)
	})

	return got, true, nil
}

// requested returns the requested IP of family f, if any.
func (r *Request) requested(f Family) (netip.Addr, bool) {
	for _, ip := range r.IPs {
		if FamilyOf(ip) == f {
			return ip, true
		}
	}

	return netip.Addr{}, false
}

// clone copies the slices the allocator keeps, so a caller reusing them
// cannot change what a held service shares.
func (r Request) clone() Request {
	r.Families = slices.Clone(r.Families)
	r.IPs = slices.Clone(r.IPs)
	r.Ports = slices.Clone(r.Ports)

	return r
}
