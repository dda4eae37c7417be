// Package health probes the endpoints named in the agent config (the local
// API server first of all) and publishes one EndpointHealth resource per
// check, with rise/fall hysteresis. It owns EndpointHealth and nothing else:
// the VIP, proxy and BGP controllers read the verdicts, never the probes.
package health

import (
	"context"
	"fmt"
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
	Result

	name string
	gen  uint64
}

// check is one running prober and what it has concluded so far.
type check struct {
	spec    *resourcepb.HealthCheckSpec
	gen     uint64
	cancel  context.CancelFunc
	verdict Verdict
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
				checks[name] = &check{spec: spec, gen: gen, cancel: cancel, verdict: NewVerdict(), since: time.Now()}

				wg.Add(1)

				go func(gen uint64) {
					defer wg.Done()

					Loop(probeCtx, ctrl.Prober, spec, func(res Result) {
						select {
						case results <- probeResult{Result: res, name: name, gen: gen}:
						case <-probeCtx.Done():
						}
					})
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

			if c.verdict.Observe(res.Err == nil, c.spec.GetRise(), c.spec.GetFall()) {
				c.since = res.At

				logger.Info("endpoint health changed", zap.String("check", res.name), zap.String("state", c.verdict.State), zap.Error(res.Err))
			}

			ctrl.Metrics.observe(res.name, c.verdict.State, res.Latency, res.Err)

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
		s.State = c.verdict.State
		s.Healthy = c.verdict.State == StateHealthy
		s.Since = timestamppb.New(c.since)
		s.ConsecutiveSuccesses = c.verdict.Successes
		s.ConsecutiveFailures = c.verdict.Failures

		if c.last != nil {
			s.LastProbeAt = timestamppb.New(c.last.At)
			s.LatencyUs = c.last.Latency.Microseconds()
			s.LastError = ""

			if c.last.Err != nil {
				s.LastError = c.last.Err.Error()
			}
		}

		return nil
	})
}
