package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// Allocator holds which service has which IPs, and the pools they come from.
// Its methods are safe for concurrent use.
type Allocator struct {
	mu sync.Mutex

	pools    []*pool // in auto-assignment order
	services map[ServiceKey]*holding
	ips      map[netip.Addr]*ipState
	// shared indexes the IPs held under each sharing key, so a keyed service
	// finds a partner without scanning every allocation.
	shared map[string]map[netip.Addr]struct{}
}

// holding is what one service holds, with the request that got it: sharing
// decisions for later services need the key and ports.
type holding struct {
	req Request
	ips []netip.Addr
}

// ipState is one held IP: who holds it, and the pool that counts it (nil when
// it lies outside every pool).
type ipState struct {
	holders []ServiceKey
	pool    *pool
}

// New returns an Allocator with no pools and no allocations.
func New() *Allocator {
	return &Allocator{
		services: map[ServiceKey]*holding{},
		ips:      map[netip.Addr]*ipState{},
		shared:   map[string]map[netip.Addr]struct{}{},
	}
}

// SetPools replaces the pools. Allocations stay as they are, also those no
// pool contains any more: Outside lists them so the controller can warn. On
// error the previous pools stay in force.
func (a *Allocator) SetPools(pools []Pool) error {
	compiled := make([]*pool, 0, len(pools))

	for _, p := range pools {
		c, err := compilePool(p)
		if err != nil {
			return err
		}

		compiled = append(compiled, c)
	}

	if err := checkDisjoint(compiled); err != nil {
		return err
	}

	slices.SortFunc(compiled, byPriority)

	a.mu.Lock()
	defer a.mu.Unlock()

	a.pools = compiled
	for ip, st := range a.ips {
		st.pool = a.poolOf(ip)
		if st.pool != nil {
			st.pool.family(FamilyOf(ip)).used++
		}
	}

	return nil
}

// checkDisjoint refuses duplicate names and overlapping ranges: every IP must
// belong to one pool at most, or usage and pool-based advertisement would be
// ambiguous.
func checkDisjoint(pools []*pool) error {
	type owned struct {
		r    addrRange
		pool string
	}

	var all []owned

	names := map[string]bool{}
	for _, p := range pools {
		if names[p.Name] {
			return fmt.Errorf("%w: pool %q defined twice", ErrPoolConfig, p.Name)
		}

		names[p.Name] = true

		for _, fr := range []*familyRanges{&p.v4, &p.v6} {
			for _, r := range fr.ranges {
				all = append(all, owned{r, p.Name})
			}
		}
	}

	slices.SortFunc(all, func(x, y owned) int { return x.r.first.Compare(y.r.first) })

	for i := 1; i < len(all); i++ {
		if prev, cur := all[i-1], all[i]; prev.r.overlaps(cur.r) {
			return fmt.Errorf("%w: %s of pool %q overlaps %s of pool %q", ErrPoolConfig, cur.r, cur.pool, prev.r, prev.pool)
		}
	}

	return nil
}

func (a *Allocator) poolOf(ip netip.Addr) *pool {
	for _, p := range a.pools {
		if p.contains(ip) {
			return p
		}
	}

	return nil
}

func (a *Allocator) poolNamed(name string) *pool {
	for _, p := range a.pools {
		if p.Name == name {
			return p
		}
	}

	return nil
}

// hold records that r's service holds ips; the service must hold nothing yet.
func (a *Allocator) hold(r Request, ips []netip.Addr) {
	a.services[r.Service] = &holding{req: r.clone(), ips: slices.Clone(ips)}

	for _, ip := range ips {
		st := a.ips[ip]
		if st == nil {
			st = &ipState{pool: a.poolOf(ip)}
			a.ips[ip] = st

			if st.pool != nil {
				st.pool.family(FamilyOf(ip)).used++
			}
		}

		st.holders = append(st.holders, r.Service)

		if r.SharingKey != "" {
			if a.shared[r.SharingKey] == nil {
				a.shared[r.SharingKey] = map[netip.Addr]struct{}{}
			}

			a.shared[r.SharingKey][ip] = struct{}{}
		}
	}
}

// release forgets what s holds and reports whether it held anything.
func (a *Allocator) release(s ServiceKey) bool {
	h := a.services[s]
	if h == nil {
		return false
	}

	delete(a.services, s)

	for _, ip := range h.ips {
		st := a.ips[ip]

		st.holders = slices.DeleteFunc(st.holders, func(k ServiceKey) bool { return k == s })
		if len(st.holders) > 0 {
			continue
		}

		delete(a.ips, ip)

		if st.pool != nil {
			st.pool.family(FamilyOf(ip)).used--
		}

		if key := h.req.SharingKey; key != "" {
			delete(a.shared[key], ip)

			if len(a.shared[key]) == 0 {
				delete(a.shared, key)
			}
		}
	}

	return true
}

// Release forgets a deleted Service's IPs (or one that changed type or
// class) and reports whether it held any.
func (a *Allocator) Release(s ServiceKey) bool {
	a.mu.Lock()
	defer a.mu.Unlock()

	return a.release(s)
}
