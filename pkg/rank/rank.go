// Package rank orders the nodes eligible for a service IP. The controller
// shows the order; every agent computes it on its own, so when the owner dies
// the survivors agree on the next one without asking the controller.
//
// A node's place comes from a hash of the node name and the address, as
// MetalLB does: IPs spread evenly over nodes, and adding or removing one node
// moves only the IPs it owned or now wins. The hash is FNV-1a with a
// splitmix64 finalizer rather than a cryptographic one: nothing here is
// adversarial, and it runs for every node of every IP whenever liveness or
// eligibility changes (a thousand nodes by ten thousand IPs).
package rank

import (
	"cmp"
	"slices"
	"strings"
)

func score(address, node string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)

	h := uint64(offset)

	for i := range len(node) {
		h = (h ^ uint64(node[i])) * prime
	}

	h = (h ^ '#') * prime

	for i := range len(address) {
		h = (h ^ uint64(address[i])) * prime
	}

	// splitmix64's finalizer: FNV alone leaves similar names close together.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31

	return h
}

func less(sa, sb uint64, a, b string) int {
	if c := cmp.Compare(sa, sb); c != 0 {
		return c
	}

	return strings.Compare(a, b)
}

// Order returns nodes sorted best first for address. nodes is not changed.
func Order(address string, nodes []string) []string {
	type scored struct {
		node  string
		score uint64
	}

	s := make([]scored, len(nodes))
	for i, n := range nodes {
		s[i] = scored{n, score(address, n)}
	}

	slices.SortFunc(s, func(a, b scored) int { return less(a.score, b.score, a.node, b.node) })

	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].node
	}

	return out
}

// Top returns the first k of Order(address, nodes) in one pass without
// sorting them all: status shows a few, and a thousand-node sort per IP is
// most of a controller pass.
func Top(address string, nodes []string, k int) []string {
	type scored struct {
		node  string
		score uint64
	}

	best := make([]scored, 0, k+1)

	for _, n := range nodes {
		s := scored{n, score(address, n)}
		if len(best) == k && less(s.score, best[k-1].score, n, best[k-1].node) >= 0 {
			continue
		}

		i := len(best)
		for i > 0 && less(s.score, best[i-1].score, n, best[i-1].node) < 0 {
			i--
		}

		best = slices.Insert(best, i, s)
		if len(best) > k {
			best = best[:k]
		}
	}

	out := make([]string, len(best))
	for i := range best {
		out[i] = best[i].node
	}

	return out
}

// Owner returns the best-ranked node for address among those live says are
// alive, without sorting: it runs on every liveness change for every IP.
func Owner(address string, nodes []string, live func(node string) bool) (string, bool) {
	var (
		best      string
		bestScore uint64
		found     bool
	)

	for _, n := range nodes {
		if !live(n) {
			continue
		}

		s := score(address, n)
		if !found || less(s, bestScore, n, best) < 0 {
			best, bestScore, found = n, s, true
		}
	}

	return best, found
}
