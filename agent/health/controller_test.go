package health_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/talos-lb/talos-lb/agent/health"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// switchProber answers each check with whatever the test last set for it.
type switchProber struct {
	mu   sync.Mutex
	fail map[string]error
}

func (p *switchProber) set(name string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()

	p.fail[name] = err
}

func (p *switchProber) Probe(_ context.Context, check *resourcepb.HealthCheckSpec) error {
	p.mu.Lock()
	defer p.mu.Unlock()

	return p.fail[check.GetName()]
}

func checkSpec(name string) *resourcepb.HealthCheckSpec {
	return &resourcepb.HealthCheckSpec{
		Name: name, Kind: "tcp", Address: "127.0.0.1:6443",
		Interval: durationpb.New(20 * time.Millisecond), Timeout: durationpb.New(20 * time.Millisecond),
		Rise: 2, Fall: 3,
	}
}

func TestHealthFollowsProbesWithHysteresis(t *testing.T) {
	prober := &switchProber{fail: map[string]error{}}
	h := ctest.New(t, &health.Controller{Prober: prober})

	cfg := resources.NewAgentConfig()
	cfg.TypedSpec().Value.HealthChecks = []*resourcepb.HealthCheckSpec{checkSpec("apiserver")}
	h.Create(cfg)

	ctest.AssertResource(h, "apiserver", func(r *resources.EndpointHealth, a *assert.Assertions) {
		a.Equal(health.StateHealthy, r.TypedSpec().Value.GetState())
		a.True(r.TypedSpec().Value.GetHealthy())
		a.Equal("127.0.0.1:6443", r.TypedSpec().Value.GetAddress())
	})

	prober.set("apiserver", errors.New("HTTP 500: etcd not ready"))

	ctest.AssertResource(h, "apiserver", func(r *resources.EndpointHealth, a *assert.Assertions) {
		a.Equal(health.StateUnhealthy, r.TypedSpec().Value.GetState())
		a.False(r.TypedSpec().Value.GetHealthy())
		a.Equal("HTTP 500: etcd not ready", r.TypedSpec().Value.GetLastError())
		a.GreaterOrEqual(r.TypedSpec().Value.GetConsecutiveFailures(), uint32(3))
	})

	prober.set("apiserver", nil)

	ctest.AssertResource(h, "apiserver", func(r *resources.EndpointHealth, a *assert.Assertions) {
		a.Equal(health.StateHealthy, r.TypedSpec().Value.GetState())
		a.Empty(r.TypedSpec().Value.GetLastError())
	})
}

func TestHealthChecksFollowConfig(t *testing.T) {
	prober := &switchProber{fail: map[string]error{"b": errors.New("refused")}}
	h := ctest.New(t, &health.Controller{Prober: prober})

	cfg := resources.NewAgentConfig()
	cfg.TypedSpec().Value.HealthChecks = []*resourcepb.HealthCheckSpec{checkSpec("a"), checkSpec("b")}
	h.Create(cfg)

	ctest.AssertResource(h, "a", func(r *resources.EndpointHealth, a *assert.Assertions) {
		a.Equal(health.StateHealthy, r.TypedSpec().Value.GetState())
	})
	ctest.AssertResource(h, "b", func(r *resources.EndpointHealth, a *assert.Assertions) {
		a.Equal(health.StateUnhealthy, r.TypedSpec().Value.GetState())
	})

	// Dropping a check removes its resource; changing one restarts its verdict.
	changed := checkSpec("a")
	changed.Address = "127.0.0.1:7000"

	cfg = resources.NewAgentConfig()
	cfg.TypedSpec().Value.HealthChecks = []*resourcepb.HealthCheckSpec{changed}
	h.Update(cfg)

	ctest.AssertNoResource[*resources.EndpointHealth](h, "b")
	ctest.AssertResource(h, "a", func(r *resources.EndpointHealth, a *assert.Assertions) {
		a.Equal("127.0.0.1:7000", r.TypedSpec().Value.GetAddress())
		a.Equal(health.StateHealthy, r.TypedSpec().Value.GetState())
	})
}
