// Package proxy runs the agent's local TCP proxies (like Talos's KubePrism):
// it turns ProxyConfig resources into running load balancers and publishes
// what they do as ProxyStatus and UpstreamStatus resources, plus metrics.
//
// It owns those two status types and nothing else. The data path (listening,
// probing, picking, relaying) is package lb, behind the Balancer interface.
package proxy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/talos-lb/talos-lb/agent/health"
	"github.com/talos-lb/talos-lb/agent/proxy/lb"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Balancer is the data path of one proxy as the controller drives it.
type Balancer interface {
	// Update applies a spec without cutting established connections; the
	// error is about listeners it could not bind.
	Update(spec *resourcepb.ProxyConfigSpec) error
	Stats() lb.Stats
	Close()
}

// States of a proxy as ProxyStatus shows them.
const (
	StateServing           = "serving"
	StateNoHealthyUpstream = "no-healthy-upstream"
	StateFailed            = "failed"
)

// Controller runs one Balancer per ProxyConfig.
type Controller struct {
	// NewBalancer starts the data path of one proxy; onChange must be called
	// when its health or listeners change. Nil means package lb probing with
	// health.NetProber.
	NewBalancer func(onChange func(), logger *zap.Logger) Balancer
	Metrics     *Metrics
	// Refresh is how often counters are republished and failed listeners
	// retried (a port still held by KubePrism, say); default 1 s.
	Refresh time.Duration
}

// Name implements controller.Controller.
func (ctrl *Controller) Name() string {
	return "proxy.Controller"
}

// Inputs implements controller.Controller.
func (ctrl *Controller) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.ConfigNamespace, Type: resources.ProxyConfigType, Kind: controller.InputWeak},
		{Namespace: resources.ConfigNamespace, Type: resources.APIEndpointsType, Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *Controller) Outputs() []controller.Output {
	return []controller.Output{
		{Type: resources.ProxyStatusType, Kind: controller.OutputExclusive},
		{Type: resources.UpstreamStatusType, Kind: controller.OutputExclusive},
	}
}

// running is one proxy and what the controller remembers about it.
type running struct {
	b       Balancer
	spec    *resourcepb.ProxyConfigSpec // as configured, plus pushed upstreams
	pushed  map[string]bool             // upstreams only the push named, draining ones included
	bindErr error
	state   string
	since   time.Time
}

// Run implements controller.Controller.
func (ctrl *Controller) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	newBalancer := ctrl.NewBalancer
	if newBalancer == nil {
		newBalancer = func(onChange func(), logger *zap.Logger) Balancer {
			return lb.New(health.NetProber{}, onChange, logger)
		}
	}

	refresh := ctrl.Refresh
	if refresh == 0 {
		refresh = time.Second
	}

	changed := make(chan struct{}, 1)
	onChange := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}

	proxies := map[string]*running{}

	defer func() {
		for name, p := range proxies {
			p.b.Close()
			ctrl.Metrics.forget(name)
		}
	}()

	ticker := time.NewTicker(refresh)
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
			if err := ctrl.reconcile(ctx, r, proxies, newBalancer, onChange, logger); err != nil {
				return err
			}
		case <-ticker.C:
			for name, p := range proxies {
				if p.bindErr != nil {
					p.bindErr = p.b.Update(p.spec)
					logBind(logger, name, p.bindErr)
				}
			}
		case <-changed:
		}

		if err := ctrl.publish(ctx, r, proxies); err != nil {
			return err
		}
	}
}

// reconcile starts, updates and stops balancers to match the ProxyConfigs.
func (ctrl *Controller) reconcile(
	ctx context.Context, r controller.Reader, proxies map[string]*running,
	newBalancer func(func(), *zap.Logger) Balancer, onChange func(), logger *zap.Logger,
) error {
	configs, err := safe.ReaderListAll[*resources.ProxyConfig](ctx, r)
	if err != nil {
		return fmt.Errorf("listing proxy configs: %w", err)
	}

	var endpoints []string

	switch res, err := safe.ReaderGetByID[*resources.APIEndpoints](ctx, r, resources.APIEndpointsID); {
	case err == nil:
		endpoints = res.TypedSpec().Value.GetEndpoints()
	case !state.IsNotFoundError(err):
		return fmt.Errorf("reading pushed API endpoints: %w", err)
	}

	want := map[string]bool{}

	for cfg := range configs.All() {
		name := cfg.Metadata().ID()
		spec, pushed := withPushed(cfg.TypedSpec().Value, endpoints)
		want[name] = true

		p, ok := proxies[name]
		if !ok {
			p = &running{b: newBalancer(onChange, logger.With(zap.String("proxy", name))), since: time.Now()}
			proxies[name] = p
			ctrl.Metrics.track(name, p.b)

			logger.Info("proxy started", zap.String("proxy", name), zap.Strings("listen", spec.GetListen()), zap.Strings("upstreams", spec.GetUpstreams()))
		} else if proto.Equal(p.spec, spec) {
			continue
		}

		if !maps.Equal(p.pushed, pushed) {
			logger.Info("pushed upstreams changed", zap.String("proxy", name), zap.Strings("pushed", slices.Sorted(maps.Keys(pushed))))
		}

		// One the push dropped drains, and still came from the push.
		for addr := range p.pushed {
			if !slices.Contains(spec.GetUpstreams(), addr) {
				if pushed == nil {
					pushed = map[string]bool{}
				}

				pushed[addr] = true
			}
		}

		p.spec, p.pushed = spec, pushed
		p.bindErr = p.b.Update(spec)
		logBind(logger, name, p.bindErr)
	}

	for name, p := range proxies {
		if !want[name] {
			p.b.Close()
			delete(proxies, name)
			ctrl.Metrics.forget(name)

			logger.Info("proxy stopped", zap.String("proxy", name))
		}
	}

	return nil
}

// withPushed returns the spec a proxy runs: the configured one, plus the
// pushed API endpoints the configuration does not name already when the
// proxy asks for them, and which upstreams those are.
func withPushed(cfg *resourcepb.ProxyConfigSpec, endpoints []string) (*resourcepb.ProxyConfigSpec, map[string]bool) {
	if !cfg.GetPushedUpstreams() || len(endpoints) == 0 {
		return cfg, nil
	}

	spec := proto.CloneOf(cfg)
	pushed := map[string]bool{}

	for _, e := range endpoints {
		if !slices.Contains(spec.Upstreams, e) {
			spec.Upstreams = append(spec.Upstreams, e)
			pushed[e] = true
		}
	}

	return spec, pushed
}

func logBind(logger *zap.Logger, name string, err error) {
	if err != nil {
		logger.Warn("proxy cannot listen on every address; retrying", zap.String("proxy", name), zap.Error(err))
	}
}

// publish writes every proxy's status and its upstreams'; the runtime drops
// the statuses of proxies and upstreams that are gone.
func (ctrl *Controller) publish(ctx context.Context, r controller.Runtime, proxies map[string]*running) error {
	r.StartTrackingOutputs()

	for name, p := range proxies {
		st := p.b.Stats()

		state := StateServing

		switch {
		case p.bindErr != nil:
			state = StateFailed
		case !st.Serving:
			state = StateNoHealthyUpstream
		}

		if state != p.state {
			p.state, p.since = state, time.Now()
		}

		if err := ctrl.writeProxy(ctx, r, name, p, st); err != nil {
			return err
		}

		for _, u := range st.Upstreams {
			if err := writeUpstream(ctx, r, name, u, p.pushed[u.Address]); err != nil {
				return err
			}
		}
	}

	if err := r.CleanupOutputs(ctx, resources.NewProxyStatus("").Metadata(), resources.NewUpstreamStatus("", "").Metadata()); err != nil {
		return fmt.Errorf("cleaning up proxy statuses: %w", err)
	}

	return nil
}

func (ctrl *Controller) writeProxy(ctx context.Context, r controller.ReaderWriter, name string, p *running, st lb.Stats) error {
	healthy := 0

	for _, u := range st.Upstreams {
		if u.State == health.StateHealthy {
			healthy++
		}
	}

	err := safe.WriterModify(ctx, r, resources.NewProxyStatus(name), func(res *resources.ProxyStatus) error {
		s := res.TypedSpec().Value
		s.Name = name
		s.Listen = st.Listen
		s.State = p.state
		s.Since = timestamppb.New(p.since)
		s.LastError = ""

		if p.bindErr != nil {
			s.LastError = p.bindErr.Error()
		}

		s.Upstreams = uint32(len(p.spec.GetUpstreams())) //nolint:gosec // a handful
		s.HealthyUpstreams = uint32(healthy)             //nolint:gosec
		s.Balance = p.spec.GetBalance()
		s.Active = uint64(max(st.Active, 0)) //nolint:gosec // never negative
		s.Total = st.Total
		s.FailedDials = st.FailedDials
		s.Retries = st.Retries
		s.Refused = st.Refused

		return nil
	})
	if err != nil {
		return fmt.Errorf("writing proxy status %s: %w", name, err)
	}

	return nil
}

func writeUpstream(ctx context.Context, r controller.ReaderWriter, proxy string, u lb.UpstreamStats, pushed bool) error {
	err := safe.WriterModify(ctx, r, resources.NewUpstreamStatus(proxy, u.Address), func(res *resources.UpstreamStatus) error {
		s := res.TypedSpec().Value
		s.Proxy = proxy
		s.Address = u.Address
		s.State = u.State
		s.Since = timestamppb.New(u.Since)
		s.Preferred = u.Preferred
		s.LatencyUs = u.Latency.Microseconds()
		s.LastProbeAt = nil

		if !u.LastProbe.IsZero() {
			s.LastProbeAt = timestamppb.New(u.LastProbe)
		}

		s.LastError = u.LastError
		s.Active = uint64(max(u.Active, 0)) //nolint:gosec // never negative
		s.Total = u.Total
		s.FailedDials = u.FailedDials
		s.Pushed = pushed

		return nil
	})
	if err != nil {
		return fmt.Errorf("writing upstream status %s/%s: %w", proxy, u.Address, err)
	}

	return nil
}
