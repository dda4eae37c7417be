package ipam

import "net/netip"

// shareable says why r may not take ip next to its current holders, or nil
// when it may: every holder must carry r's non-empty sharing key, and no two
// services on one IP may serve the same protocol and port.
func (a *Allocator) shareable(ip netip.Addr, r *Request) error {
	st := a.ips[ip]
	if st == nil {
		return nil
	}

	for _, holder := range st.holders {
		if holder == r.Service {
			continue
		}

		other := &a.services[holder].req
		if r.SharingKey == "" || other.SharingKey != r.SharingKey {
			return &InUseError{IP: ip, Holder: holder, Key: r.SharingKey}
		}

		if p, ok := collision(r.Ports, other.Ports); ok {
			return &InUseError{IP: ip, Holder: holder, Key: r.SharingKey, Collides: &p}
		}
	}

	return nil
}

func collision(a, b []Port) (Port, bool) {
	for _, p := range a {
		for _, q := range b {
			if p == q {
				return p, true
			}
		}
	}

	return Port{}, false
}
