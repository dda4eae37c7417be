package lb

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/talos-lb/talos-lb/agent/health"
)

// upstream is one address a proxy forwards to. Its health fields are guarded
// by the proxy's mutex; the counters are atomic because the data path bumps them.
type upstream struct {
	addr string
	sa   *sockaddr // nil for a host name, resolved at each dial

	verdict   health.Verdict
	since     time.Time
	latency   time.Duration // smoothed probe round trip, zero until a probe passes
	lastProbe time.Time
	lastErr   string
	removed   bool // left the configured set; drains, then goes away
	local     bool // an address of this node

	active      atomic.Int64
	total       atomic.Uint64
	failedDials atomic.Uint64
}

// usable says whether a client may be sent here at all. An upstream that was
// never probed counts, so a freshly started agent serves before its first verdicts.
func (u *upstream) usable() bool {
	return !u.removed && u.verdict.State != health.StateUnhealthy
}

// observe folds a probe result in and reports whether picks must be recomputed.
func (u *upstream) observe(res health.Result, rise, fall uint32) bool {
	u.lastProbe = res.At

	changed := u.verdict.Observe(res.Err == nil, rise, fall)
	if changed {
		u.since = res.At
	}

	if res.Err != nil {
		u.lastErr = res.Err.Error()

		return changed
	}

	u.lastErr = ""

	// An EWMA keeps one slow probe (a GC pause, a busy API server) from
	// moving the upstream out of its latency tier.
	if u.latency == 0 {
		u.latency = res.Latency
	} else {
		u.latency = (7*u.latency + 3*res.Latency) / 10
	}

	return true
}

// eject takes the upstream out after a failed dial and reports whether that changed its state.
func (u *upstream) eject(at time.Time, err error) bool {
	u.lastErr = "dial: " + err.Error()

	if !u.verdict.Eject() {
		return false
	}

	u.since = at

	return true
}

// tierLimit is the slowest latency that still shares the fastest upstream's
// tier. The slack is coarse on purpose: probe times jitter by hundreds of µs
// on a busy node, and only upstreams clearly farther away (another site)
// should lose their share.
func tierLimit(fastest time.Duration) time.Duration {
	return 2*fastest + time.Millisecond
}

// table is an immutable view of which upstreams new clients may go to, best
// tier first; the data path reads it without locks.
type table struct {
	tiers [][]*upstream
}

// buildTable groups usable upstreams into tiers: the best healthy ones (those
// on this node if any, else the lowest-latency ones), then the other healthy
// ones, then those without a verdict yet.
func buildTable(ups []*upstream) *table {
	var healthy, local, unknown []*upstream

	for _, u := range ups {
		switch {
		case !u.usable():
		case u.verdict.State == health.StateHealthy:
			healthy = append(healthy, u)

			if u.local {
				local = append(local, u)
			}
		default:
			unknown = append(unknown, u)
		}
	}

	t := &table{}

	// An API server on this node wins whatever the probes measured: its
	// connections never leave the node, and local probe times are all noise.
	best := local

	if len(best) == 0 && len(healthy) > 0 {
		fastest := slices.MinFunc(healthy, func(a, b *upstream) int { return int(a.latency - b.latency) }).latency
		limit := tierLimit(fastest)
		best = slices.DeleteFunc(slices.Clone(healthy), func(u *upstream) bool { return u.latency > limit })
	}

	if len(best) > 0 {
		t.tiers = append(t.tiers, best)
	}

	if rest := slices.DeleteFunc(healthy, func(u *upstream) bool { return slices.Contains(best, u) }); len(rest) > 0 {
		t.tiers = append(t.tiers, rest)
	}

	if len(unknown) > 0 {
		t.tiers = append(t.tiers, unknown)
	}

	return t
}

func (t *table) preferred(u *upstream) bool {
	return len(t.tiers) > 0 && u.verdict.State == health.StateHealthy && slices.Contains(t.tiers[0], u)
}

// maxAttempts bounds the dials for one client; more upstreams than this
// in one proxy is unusual, and the connect budget bounds the time anyway.
const maxAttempts = 8

// pick chooses the next upstream for a client that already tried the ones in
// tried: the first tier with an untried upstream, and in it the next in round
// robin order (rr) or the one with the fewest active connections.
func (t *table) pick(tried []*upstream, rr uint64, leastConn bool) *upstream {
	for _, tier := range t.tiers {
		var best *upstream

		n := uint64(len(tier))
		for i := range n {
			u := tier[(rr+i)%n]
			if slices.Contains(tried, u) {
				continue
			}

			if !leastConn {
				return u
			}

			if best == nil || u.active.Load() < best.active.Load() {
				best = u
			}
		}

		if best != nil {
			return best
		}
	}

	return nil
}
