package l2svc

import (
	"time"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// Liveness sources, as in L2OwnershipSpec.liveness.
const (
	LivenessGossip = "gossip"
	LivenessNone   = "none"
)

// Member states (MemberSpec.state) and the states this package adds.
const (
	stateAlive   = "alive"
	stateSuspect = "suspect"
	// stateUnseen: gossip runs but has never shown the node.
	stateUnseen = "unseen"
)

// liveness says which nodes count as live, from the Member resources the
// gossip publishes.
//
//   - No Member at all (gossip not configured, or not started yet): every
//     eligible node counts as live. The best-ranked node answers and the others
//     do not, so there is never more than one answerer, but nobody takes over
//     when the owner dies: failover needs gossip. (Counting only this node as
//     live would make every eligible node answer at once.)
//   - alive and suspect count as live. A suspect node is one that missed
//     probes but was not declared dead yet; taking its IPs at the first missed
//     probe would move them on every hiccup, and memberlist turns a real
//     failure into dead within its suspicion timeout anyway.
//   - dead and left do not.
//   - A node gossip has never shown counts as live during a grace period after
//     gossip first showed any member (its join may still be under way, and
//     taking its IPs then would make two answerers at every start), and as not
//     live afterwards (its agent is not running, or cannot reach us).
//   - This node is live unless its own Member says otherwise (left while
//     shutting down).
type liveness struct {
	self    string
	known   bool
	members map[string]*resourcepb.MemberSpec
	// inGrace: unseen nodes still count as live.
	inGrace bool
}

// state is the node's state as it counts here.
func (l *liveness) state(node string) string {
	if !l.known {
		return stateAlive
	}

	if m, ok := l.members[node]; ok {
		return m.GetState()
	}

	if node == l.self {
		return stateAlive
	}

	return stateUnseen
}

func (l *liveness) live(node string) bool {
	switch l.state(node) {
	case stateAlive, stateSuspect:
		return true
	case stateUnseen:
		return l.inGrace
	default:
		return false
	}
}

func (l *liveness) source() string {
	if l.known {
		return LivenessGossip
	}

	return LivenessNone
}

// graceClock remembers when gossip first showed members, for the grace
// period of unseen nodes.
type graceClock struct {
	grace     time.Duration
	firstSeen time.Time
}

// observe notes whether members exist now and returns whether the grace
// period still runs, and when it ends.
func (g *graceClock) observe(now time.Time, known bool) (bool, time.Time) {
	if !known {
		g.firstSeen = time.Time{}

		return false, time.Time{}
	}

	if g.firstSeen.IsZero() {
		g.firstSeen = now
	}

	end := g.firstSeen.Add(g.grace)

	return now.Before(end), end
}
