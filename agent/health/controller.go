// Package health probes the endpoints named in the agent config (the local
// API server first of all) and publishes one EndpointHealth resource per
// check, with rise/fall hysteresis. It owns EndpointHealth and nothing else:
// the VIP, proxy and BGP controllers read the verdicts, never the probes.
package health

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Controller turns the config's health checks into EndpointHealth resources.
type Controller struct {
	Prober  Prober
	Metrics *Metrics
}

// Name implements controller.Controller.
func (ctrl *Controller) Name() string {
	return "health.EndpointHealthController"
}

// Inputs implements controller.Controller.
func (ctrl *Controller) Inputs() []controller.Input {
	return []controller.Input{{
		Namespace: resources.ConfigNamespace,
		Type:      resources.AgentConfigType,
		ID:        optional.Some(resources.AgentConfigID),
		Kind:      controller.InputWeak,
	}}
}

// Outputs implements controller.Controller.
func (ctrl *Controller) Outputs() []controller.Output {
	return []controller.Output{{Type: resources.EndpointHealthType, Kind: controller.OutputExclusive}}
}

type probeResult struct {
	name    string
	gen     uint64
	at      time.Time
	latency time.Duration
	err     error
}

// check is one running prober and what it has concluded so far.
type check struct {
	spec    *resourcepb.HealthCheckSpec
	gen     uint64
	cancel  context.CancelFunc
	verdict verdict
	since   time.Time
	last    *probeResult
}

// Run implements controller.Controller.
func (ctrl *Controller) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	results := make(chan probeResult)
	checks := map[string]*check{}

	var (
		gen uint64
		wg  sync.WaitGroup
	)

	defer func() {
		for _, c := range checks {
			c.cancel()
		}

		wg.Wait()
	}()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
			want, err := ctrl.wantedChecks(ctx, r)
			if err != nil {
				return err
			}

			for name, c := range checks {
				if spec, ok := want[name]; !ok || !proto.Equal(spec, c.spec) {
					c.cancel()
					delete(checks, name)
					ctrl.Metrics.forget(name)
				}
			}

			for name, spec := range want {
				if _, ok := checks[name]; ok {
					continue
				}

				gen++
				probeCtx, cancel := context.WithCancel(ctx)
				checks[name] = &check{spec: spec, gen: gen, cancel: cancel, verdict: verdict{state: StateUnknown}, since: time.Now()}

				wg.Add(1)

				go func(gen uint64) {
					defer wg.Done()

					ctrl.probeLoop(probeCtx, spec, gen, results)
				}(gen)

				logger.Info("health check started", zap.String("check", name), zap.String("kind", spec.GetKind()), zap.String("address", spec.GetAddress()))
			}

			r.StartTrackingOutputs()

			for _, c := range checks {
				if err := ctrl.write(ctx, r, c); err != nil {
					return err
				}
			}

			if err := r.CleanupOutputs(ctx, resources.NewEndpointHealth("").Metadata()); err != nil {
				return fmt.Errorf("cleaning up endpoint health: %w", err)
			}
		case res := <-results:
			c, ok := checks[res.name]
			if !ok || c.gen != res.gen {
				continue // a result of a check that was replaced meanwhile
			}

			c.last = &res

			if c.verdict.observe(res.err == nil, c.spec.GetRise(), c.spec.GetFall()) {
				c.since = res.at

				logger.Info("endpoint health changed", zap.String("check", res.name), zap.String("state", c.verdict.state), zap.Error(res.err))
			}

			ctrl.Metrics.observe(res.name, c.verdict.state, res.latency, res.err)

			if err := ctrl.write(ctx, r, c); err != nil {
				return err
			}
		}
	}
}

func (ctrl *Controller) wantedChecks(ctx context.Context, r controller.Reader) (map[string]*resourcepb.HealthCheckSpec, error) {
	cfg, err := safe.ReaderGetByID[*resources.AgentConfig](ctx, r, resources.AgentConfigID)
	if err != nil {
		if state.IsNotFoundError(err) {
			return nil, nil
		}

		return nil, fmt.Errorf("reading agent config: %w", err)
	}

	want := map[string]*resourcepb.HealthCheckSpec{}
	for _, spec := range cfg.TypedSpec().Value.GetHealthChecks() {
		want[spec.GetName()] = spec
	}

	return want, nil
}

func (ctrl *Controller) write(ctx context.Context, r controller.ReaderWriter, c *check) error {
	return safe.WriterModify(ctx, r, resources.NewEndpointHealth(c.spec.GetName()), func(res *resources.EndpointHealth) error {
		s := res.TypedSpec().Value
		s.Name = c.spec.GetName()
		s.Kind = c.spec.GetKind()
		s.Address = c.spec.GetAddress()
		s.State = c.verdict.state
		s.Healthy = c.verdict.state == StateHealthy
		s.Since = timestamppb.New(c.since)
		s.ConsecutiveSuccesses = c.verdict.successes
		s.ConsecutiveFailures = c.verdict.failures

		if c.last != nil {
			s.LastProbeAt = timestamppb.New(c.last.at)
			s.LatencyUs = c.last.latency.Microseconds()
			s.LastError = ""

			if c.last.err != nil {
				s.LastError = c.last.err.Error()
			}
		}

		return nil
	})
}

// probeLoop probes until ctx ends; the first probe is immediate so a fresh
// agent reaches a verdict within rise × interval.
func (ctrl *Controller) probeLoop(ctx context.Context, spec *resourcepb.HealthCheckSpec, gen uint64, out chan<- probeResult) {
	interval := spec.GetInterval().AsDuration()
	timeout := spec.GetTimeout().AsDuration()

	for {
		start := time.Now()

		probeCtx, cancel := context.WithTimeout(ctx, timeout)
		err := ctrl.Prober.Probe(probeCtx, spec)

		cancel()

		select {
		case out <- probeResult{name: spec.GetName(), gen: gen, at: start, latency: time.Since(start), err: err}:
		case <-ctx.Done():
			return
		}

		// ±10 % jitter keeps many nodes from probing one API server in lockstep.
		wait := interval - time.Since(start) + time.Duration((rand.Float64()-0.5)*0.2*float64(interval))

		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}
