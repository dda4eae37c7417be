package ipam

import (
	"cmp"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
)

// Pool is an address pool as the controller reads it from its CRD.
type Pool struct {
	Name string
	// Addresses are CIDRs ("10.0.0.0/24", "fd00::/112") or inclusive ranges
	// ("10.0.0.10-10.0.0.20"), of either family, in any mix.
	Addresses []string
	// AutoAssign lets services that name neither this pool nor one of its IPs
	// get an address from it.
	AutoAssign bool
	// AvoidBuggyIPs skips IPv4 addresses ending in .0 or .255.
	AvoidBuggyIPs bool
	// Priority orders auto-assignment: lower wins, ties go by name.
	Priority int
	// NamespaceSelector and ServiceSelector see a Request's NamespaceLabels and
	// Labels; nil selects everything. The caller builds them from its label
	// selectors so that no Kubernetes type reaches this package.
	NamespaceSelector func(labels map[string]string) bool
	ServiceSelector   func(labels map[string]string) bool
}

// pool is a Pool with its addresses parsed and its per-family state.
type pool struct {
	Pool

	v4, v6 familyRanges
}

// familyRanges are a pool's ranges of one family, with how many of their
// addresses are held and where the next search starts.
type familyRanges struct {
	ranges []addrRange
	total  *big.Int
	used   int64

	// next-fit: searching on from the last address handed out keeps 10,000
	// allocations linear, and does not give a just-released IP to the very next
	// service while clients may still cache the old owner's MAC.
	cursorRange int
	cursor      netip.Addr
}

func compilePool(p Pool) (*pool, error) {
	if p.Name == "" {
		return nil, fmt.Errorf("%w: a pool has no name", ErrPoolConfig)
	}

	if len(p.Addresses) == 0 {
		return nil, fmt.Errorf("%w: pool %q has no addresses", ErrPoolConfig, p.Name)
	}

	c := &pool{Pool: p}

	for _, s := range p.Addresses {
		r, err := parseRange(s)
		if err != nil {
			return nil, fmt.Errorf("%w: pool %q: address %q: %w", ErrPoolConfig, p.Name, s, err)
		}

		fr := c.family(r.family())
		fr.ranges = append(fr.ranges, r)
	}

	for _, fr := range []*familyRanges{&c.v4, &c.v6} {
		slices.SortFunc(fr.ranges, func(a, b addrRange) int { return a.first.Compare(b.first) })

		fr.total = new(big.Int)
		for _, r := range fr.ranges {
			fr.total.Add(fr.total, r.size(p.AvoidBuggyIPs))
		}

		if len(fr.ranges) > 0 {
			fr.cursor = fr.ranges[0].first
		}
	}

	return c, nil
}

func (p *pool) family(f Family) *familyRanges {
	if f == IPv4 {
		return &p.v4
	}

	return &p.v6
}

// contains says whether the pool may hand out a.
func (p *pool) contains(a netip.Addr) bool {
	if p.AvoidBuggyIPs && buggy(a) {
		return false
	}

	for _, r := range p.family(FamilyOf(a)).ranges {
		if r.contains(a) {
			return true
		}
	}

	return false
}

func (p *pool) selects(r *Request) bool {
	return (p.NamespaceSelector == nil || p.NamespaceSelector(r.NamespaceLabels)) &&
		(p.ServiceSelector == nil || p.ServiceSelector(r.Labels))
}

// full reports whether every address of the family is held.
func (fr *familyRanges) full() bool {
	return fr.total.IsInt64() && fr.used >= fr.total.Int64()
}

// pick finds a free address, searching on from the cursor and wrapping around
// once; free says whether an address may be taken.
func (p *pool) pick(f Family, free func(netip.Addr) bool) (netip.Addr, bool) {
	fr := p.family(f)
	if len(fr.ranges) == 0 || fr.full() {
		return netip.Addr{}, false
	}

	ri, a := fr.cursorRange, fr.cursor
	// One lap more than there are ranges: the search may start in the middle
	// of a range and must also see the part before the cursor.
	for range len(fr.ranges) + 1 {
		r := fr.ranges[ri]
		for ; r.contains(a); a = a.Next() {
			if (!p.AvoidBuggyIPs || !buggy(a)) && free(a) {
				fr.advance(ri, a)
				return a, true
			}
		}

		ri = (ri + 1) % len(fr.ranges)
		a = fr.ranges[ri].first
	}

	return netip.Addr{}, false
}

// advance moves the cursor past a, into the next range when a ends its own,
// so the cursor always lies inside ranges[cursorRange].
func (fr *familyRanges) advance(ri int, a netip.Addr) {
	if next := a.Next(); fr.ranges[ri].contains(next) {
		fr.cursorRange, fr.cursor = ri, next
		return
	}

	fr.cursorRange = (ri + 1) % len(fr.ranges)
	fr.cursor = fr.ranges[fr.cursorRange].first
}

// byPriority orders pools for auto-assignment.
func byPriority(a, b *pool) int {
	return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Name, b.Name))
}
