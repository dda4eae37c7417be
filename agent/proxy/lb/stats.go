package lb

import (
	"slices"
	"time"
)

// Stats is a snapshot of a proxy, for status resources and metrics.
type Stats struct {
	// Listen holds the bound addresses; BindError says why others are missing.
	Listen    []string
	BindError error
	// Serving is false when no upstream may take a client: they are refused at once.
	Serving bool

	Active      int64
	Total       uint64
	FailedDials uint64
	Retries     uint64
	Refused     uint64

	// Upstreams in configured order, then those draining.
	Upstreams []UpstreamStats
}

// UpstreamStats is one upstream in a Stats snapshot.
type UpstreamStats struct {
	Address string
	// State is a health state, or "draining" once removed.
	State     string
	Since     time.Time
	Preferred bool
	Latency   time.Duration
	LastProbe time.Time
	LastError string

	Active      int64
	Total       uint64
	FailedDials uint64
}

// StateDraining is the state of an upstream removed with connections left.
const StateDraining = "draining"

// Stats returns a snapshot; draining upstreams whose last connection ended are forgotten here.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()

	t := p.table.Load()

	s := Stats{
		BindError:   p.bindErr,
		Serving:     len(t.tiers) > 0,
		Active:      p.active.Load(),
		Total:       p.total.Load(),
		FailedDials: p.failedDials.Load(),
		Retries:     p.retries.Load(),
		Refused:     p.refused.Load(),
	}

	for _, ln := range p.listeners {
		s.Listen = append(s.Listen, ln.addr)
	}

	slices.Sort(s.Listen)

	p.draining = slices.DeleteFunc(p.draining, func(u *upstream) bool { return u.active.Load() == 0 })

	for _, u := range slices.Concat(p.ups, p.draining) {
		// An address removed and added back: the live one speaks for it.
		if u.removed && slices.ContainsFunc(p.ups, func(o *upstream) bool { return o.addr == u.addr }) {
			continue
		}

		us := UpstreamStats{
			Address:     u.addr,
			State:       u.verdict.State,
			Since:       u.since,
			Preferred:   t.preferred(u),
			Latency:     u.latency,
			LastProbe:   u.lastProbe,
			LastError:   u.lastErr,
			Active:      u.active.Load(),
			Total:       u.total.Load(),
			FailedDials: u.failedDials.Load(),
		}

		if u.removed {
			us.State = StateDraining
		}

		s.Upstreams = append(s.Upstreams, us)
	}

	return s
}
