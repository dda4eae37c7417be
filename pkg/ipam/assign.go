package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// Claim is a Service's request together with the IPs its status already
// shows.
type Claim struct {
	Request Request
	IPs     []netip.Addr
}

// Assign loads what Services already hold, as the controller reads it from
// their status at start: Kubernetes is the source of truth, so IPs are taken
// as they are, also outside every pool (Outside reports those), and nothing
// is reallocated.
//
// Claims are loaded in the order given, which should be the order of
// precedence (the controller passes the oldest Service first). A claim that
// would share an IP with an incompatible earlier one is not loaded at all and
// comes back as a *ClaimError naming both: picking a winner silently would
// hide a broken cluster, and the caller decides whether to reallocate it.
func (a *Allocator) Assign(claims []Claim) []error {
	a.mu.Lock()
	defer a.mu.Unlock()

	var errs []error

	for _, c := range claims {
		if err := a.claimable(&c); err != nil {
			errs = append(errs, &ClaimError{Service: c.Request.Service, Err: err})
			continue
		}

		a.release(c.Request.Service)
		a.hold(c.Request, c.IPs)
	}

	return errs
}

func (a *Allocator) claimable(c *Claim) error {
	for i, ip := range c.IPs {
		if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
			return fmt.Errorf("%w: %q is not a service IP", ErrInvalid, ip)
		}

		if slices.Contains(c.IPs[:i], ip) {
			return fmt.Errorf("%w: %s listed twice", ErrInvalid, ip)
		}

		if err := a.shareable(ip, &c.Request); err != nil {
			return err
		}
	}

	return nil
}
