package health

import (
	"context"
	"math/rand/v2"
	"time"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// Result is the outcome of one probe.
type Result struct {
	At      time.Time
	Latency time.Duration
	Err     error
}

// Loop probes check with p until ctx ends and hands every result to report,
// which may block. The first probe is immediate, so a fresh agent reaches a
// verdict within rise × interval.
func Loop(ctx context.Context, p Prober, check *resourcepb.HealthCheckSpec, report func(Result)) {
	interval := check.GetInterval().AsDuration()
	timeout := check.GetTimeout().AsDuration()

	for {
		start := time.Now()

		probeCtx, cancel := context.WithTimeout(ctx, timeout)
		err := p.Probe(probeCtx, check)

		cancel()

		report(Result{At: start, Latency: time.Since(start), Err: err})

		// ±10 % jitter keeps many nodes from probing one API server in lockstep.
		wait := interval - time.Since(start) + time.Duration((rand.Float64()-0.5)*0.2*float64(interval))

		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}
