package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Allocate gives r's service its IPs, one per family it needs, primary family
// first. It is idempotent: IPs the service holds and may still hold are kept.
// A requested IP is taken if it lies in a pool that selects the service and
// its holders (if any) share with it; otherwise the pools are searched in
// priority order, preferring an IP already shared under r's key.
//
// On error nothing changes: the service keeps what it held, so a bad edit to
// a Service does not take its IP away.
func (a *Allocator) Allocate(r Request) (Allocation, error) {
	families, allRequired, err := r.families()
	if err != nil {
		return Allocation{}, err
	}

	a.mu.Lock()
	defer a.mu.Unlock()

	if r.Pool != "" && a.poolNamed(r.Pool) == nil {
		return Allocation{}, &UnknownPoolError{Service: r.Service, Pool: r.Pool}
	}

	var held []netip.Addr
	if h := a.services[r.Service]; h != nil {
		held = h.ips
	}

	var (
		ips  []netip.Addr
		errs []error
	)

	for _, f := range families {
		ip, err := a.choose(&r, f, held)
		if err != nil && allRequired {
			return Allocation{}, err
		}

		if err != nil {
			errs = append(errs, err)
			continue
		}

		ips = append(ips, ip)
	}

	if len(ips) == 0 {
		return Allocation{}, errors.Join(errs...)
	}

	a.release(r.Service)
	a.hold(r, ips)

	return a.allocation(r.Service), nil
}

// choose finds r's IP of family f: the requested one, else a held one that is
// still valid, else a new one.
func (a *Allocator) choose(r *Request, f Family, held []netip.Addr) (netip.Addr, error) {
	if ip, ok := r.requested(f); ok {
		return ip, a.admit(r, ip, slices.Contains(held, ip))
	}

	for _, ip := range held {
		if FamilyOf(ip) == f && a.admit(r, ip, true) == nil {
			return ip, nil
		}
	}

	return a.pick(r, f)
}

// admit says why r may not have ip. held means r's service has it already,
// which keeps an IP whose pool was removed or shrunk: the allocator never
// hands out such an IP, but does not take it from a running service either.
func (a *Allocator) admit(r *Request, ip netip.Addr, held bool) error {
	p := a.poolOf(ip)

	switch {
	case p == nil && held && r.Pool == "":
	case p == nil && r.Pool != "", p != nil && r.Pool != "" && p.Name != r.Pool:
		return &OutsidePoolsError{IP: ip, Pools: []string{r.Pool}}
	case p == nil:
		return &OutsidePoolsError{IP: ip, Pools: a.poolNames()}
	case !p.selects(r):
		return &NoPoolError{Service: r.Service, Family: FamilyOf(ip), Reason: fmt.Sprintf("pool %s, which holds %s, does not select it", p.Name, ip)}
	}

	return a.shareable(ip, r)
}

// pick takes a new IP of family f from the first pool, in priority order,
// that may serve r and has room.
func (a *Allocator) pick(r *Request, f Family) (netip.Addr, error) {
	free := func(ip netip.Addr) bool { _, used := a.ips[ip]; return !used }

	var tried []string

	for _, p := range a.pools {
		eligible := p.AutoAssign
		if r.Pool != "" {
			eligible = p.Name == r.Pool
		}

		if !eligible || !p.selects(r) || len(p.family(f).ranges) == 0 {
			continue
		}

		tried = append(tried, p.Name)

		if ip, ok := a.pickShared(p, r, f); ok {
			return ip, nil
		}

		if ip, ok := p.pick(f, free); ok {
			return ip, nil
		}
	}

	if len(tried) == 0 {
		return netip.Addr{}, &NoPoolError{Service: r.Service, Family: f, Reason: a.whyNoPool(r, f)}
	}

	return netip.Addr{}, &ExhaustedError{Service: r.Service, Family: f, Pools: tried}
}

// pickShared finds the lowest IP of pool p and family f that r may share
// with services of its key.
func (a *Allocator) pickShared(p *pool, r *Request, f Family) (netip.Addr, bool) {
	var best netip.Addr

	for ip := range a.shared[r.SharingKey] {
		if a.ips[ip].pool == p && FamilyOf(ip) == f && (!best.IsValid() || ip.Less(best)) && a.shareable(ip, r) == nil {
			best = ip
		}
	}

	return best, best.IsValid()
}

func (a *Allocator) whyNoPool(r *Request, f Family) string {
	if r.Pool == "" {
		return fmt.Sprintf("no auto-assign pool with %s addresses selects it", f)
	}

	if !a.poolNamed(r.Pool).selects(r) {
		return fmt.Sprintf("pool %s does not select it", r.Pool)
	}

	return fmt.Sprintf("pool %s has no %s addresses", r.Pool, f)
}

func (a *Allocator) poolNames() []string {
	names := make([]string, len(a.pools))
	for i, p := range a.pools {
		names[i] = p.Name
	}

	return names
}
