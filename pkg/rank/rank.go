// Package rank orders the nodes eligible for a service IP. The controller
// shows the order; every agent computes it on its own, so when the owner dies
// the survivors agree on the next one without asking the controller.
//
// A node's place comes from a hash of the node name and the address, as
// MetalLB does: IPs spread evenly over nodes, and adding or removing one node
// moves only the IPs it owned or now wins.
package rank

import (
	"bytes"
	"crypto/sha256"
	"slices"
)

func score(address, node string) [sha256.Size]byte {
	return sha256.Sum256([]byte(node + "#" + address))
}

func less(sa, sb [sha256.Size]byte, a, b string) int {
	if c := bytes.Compare(sa[:], sb[:]); c != 0 {
		return c
	}

	return bytes.Compare([]byte(a), []byte(b))
}

// Order returns nodes sorted best first for address. nodes is not changed.
func Order(address string, nodes []string) []string {
	type scored struct {
		node  string
		score [sha256.Size]byte
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

// Owner returns the best-ranked node for address among those live says are
// alive, without sorting: it runs on every liveness change for every IP.
func Owner(address string, nodes []string, live func(node string) bool) (string, bool) {
	var (
		best      string
		bestScore [sha256.Size]byte
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
