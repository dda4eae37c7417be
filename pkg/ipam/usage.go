package ipam

import (
	"cmp"
	"math/big"
	"net/netip"
	"slices"
	"strings"
)

// Allocation is what one service holds.
type Allocation struct {
	Service ServiceKey
	IPs     []netip.Addr
	// Pools[i] names the pool of IPs[i]; "" when it lies outside every pool.
	Pools []string
}

// Outside reports whether any of the IPs lies outside every pool.
func (al Allocation) Outside() bool { return slices.Contains(al.Pools, "") }

func (a *Allocator) allocation(s ServiceKey) Allocation {
	h := a.services[s]
	al := Allocation{Service: s, IPs: slices.Clone(h.ips), Pools: make([]string, len(h.ips))}

	for i, ip := range h.ips {
		if p := a.ips[ip].pool; p != nil {
			al.Pools[i] = p.Name
		}
	}

	return al
}

// Get returns what s holds.
func (a *Allocator) Get(s ServiceKey) (Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()

	if a.services[s] == nil {
		return Allocation{}, false
	}

	return a.allocation(s), true
}

// Allocations lists every service's allocation, ordered by service.
func (a *Allocator) Allocations() []Allocation {
	return a.list(func(Allocation) bool { return true })
}

// Outside lists the allocations with an IP outside every pool, as left by a
// pool that was removed or shrunk, or loaded by Assign; the controller warns
// about them.
func (a *Allocator) Outside() []Allocation {
	return a.list(Allocation.Outside)
}

func (a *Allocator) list(keep func(Allocation) bool) []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()

	var out []Allocation

	for s := range a.services {
		if al := a.allocation(s); keep(al) {
			out = append(out, al)
		}
	}

	slices.SortFunc(out, func(x, y Allocation) int {
		return cmp.Or(strings.Compare(x.Service.Namespace, y.Service.Namespace), strings.Compare(x.Service.Name, y.Service.Name))
	})

	return out
}

// Usage is how full one family of one pool is. Total and Free are big
// integers because an IPv6 pool may hold 2^64 addresses or more.
type Usage struct {
	Pool        string
	Family      Family
	Total, Free *big.Int
	Used        int64
}

// Usage reports every pool's usage per family it has, in priority order.
func (a *Allocator) Usage() []Usage {
	a.mu.Lock()
	defer a.mu.Unlock()

	var out []Usage

	for _, p := range a.pools {
		for _, f := range []Family{IPv4, IPv6} {
			fr := p.family(f)
			if len(fr.ranges) == 0 {
				continue
			}

			free := new(big.Int).Sub(fr.total, big.NewInt(fr.used))
			out = append(out, Usage{Pool: p.Name, Family: f, Total: new(big.Int).Set(fr.total), Free: free, Used: fr.used})
		}
	}

	return out
}
