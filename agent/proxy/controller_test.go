package proxy_test

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/talos-lb/talos-lb/agent/health"
	"github.com/talos-lb/talos-lb/agent/proxy"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/nettest"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// listener is a real upstream that accepts and holds connections.
func listener(t *testing.T) *nettest.Server {
	t.Helper()

	return nettest.Listen(t, func(net.Conn) {})
}

func proxyConfig(name string, listen string, upstreams ...string) *resources.ProxyConfig {
	cfg := resources.NewProxyConfig(name)
	cfg.TypedSpec().Value = &resourcepb.ProxyConfigSpec{
		Name: name, Listen: []string{listen}, Upstreams: upstreams,
		HealthCheck: &resourcepb.HealthCheckSpec{
			Kind: "tcp", Interval: durationpb.New(20 * time.Millisecond), Timeout: durationpb.New(200 * time.Millisecond), Rise: 1, Fall: 1,
		},
		Balance: "round-robin", ConnectTimeout: durationpb.New(5 * time.Second), DialTimeout: durationpb.New(time.Second),
		Keepalive: durationpb.New(10 * time.Second), UserTimeout: durationpb.New(30 * time.Second),
	}

	return cfg
}

func TestControllerRunsProxiesAndPublishesStatus(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := ctest.New(t, &proxy.Controller{Metrics: proxy.NewMetrics(reg), Refresh: 10 * time.Millisecond})

	a, b := listener(t), listener(t)
	addrA, addrB := a.Addr(), b.Addr()

	h.Create(proxyConfig("kubernetes", "127.0.0.1:0", addrA, addrB))

	var listen string

	ctest.AssertResource(h, "kubernetes", func(r *resources.ProxyStatus, a *assert.Assertions) {
		s := r.TypedSpec().Value
		a.Equal(proxy.StateServing, s.GetState())
		a.Equal(uint32(2), s.GetUpstreams())
		a.Equal(uint32(2), s.GetHealthyUpstreams())
		a.Equal("round-robin", s.GetBalance())

		if a.Len(s.GetListen(), 1) {
			listen = s.GetListen()[0]
		}
	})

	ctest.AssertResource(h, resources.UpstreamStatusID("kubernetes", addrA), func(r *resources.UpstreamStatus, a *assert.Assertions) {
		s := r.TypedSpec().Value
		a.Equal(health.StateHealthy, s.GetState())
		a.Equal("kubernetes", s.GetProxy())
		a.True(s.GetPreferred())
		a.NotNil(s.GetLastProbeAt())
	})

	for range 4 {
		c, err := net.Dial("tcp", listen)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() }) //nolint:errcheck
	}

	// Counters reach the resources without any config change.
	ctest.AssertResource(h, "kubernetes", func(r *resources.ProxyStatus, a *assert.Assertions) {
		a.Equal(uint64(4), r.TypedSpec().Value.GetTotal())
		a.Equal(uint64(4), r.TypedSpec().Value.GetActive())
	})
	ctest.AssertResource(h, resources.UpstreamStatusID("kubernetes", addrB), func(r *resources.UpstreamStatus, a *assert.Assertions) {
		a.Equal(uint64(2), r.TypedSpec().Value.GetActive())
	})

	assert.Equal(t, map[string]float64{
		`talos_lb_proxy_connections_total{proxy="kubernetes"}`:                                    4,
		`talos_lb_proxy_serving{proxy="kubernetes"}`:                                              1,
		`talos_lb_proxy_upstream_connections_active{proxy="kubernetes",upstream="` + addrA + `"}`: 2,
		`talos_lb_proxy_upstream_connections_active{proxy="kubernetes",upstream="` + addrB + `"}`: 2,
	}, gather(t, reg, "talos_lb_proxy_connections_total", "talos_lb_proxy_serving", "talos_lb_proxy_upstream_connections_active"))

	// Every upstream gone: the proxy says it refuses clients.
	a.Kill()
	b.Kill()

	ctest.AssertResource(h, "kubernetes", func(r *resources.ProxyStatus, a *assert.Assertions) {
		a.Equal(proxy.StateNoHealthyUpstream, r.TypedSpec().Value.GetState())
		a.Zero(r.TypedSpec().Value.GetHealthyUpstreams())
	})
	ctest.AssertResource(h, resources.UpstreamStatusID("kubernetes", addrA), func(r *resources.UpstreamStatus, a *assert.Assertions) {
		a.Equal(health.StateUnhealthy, r.TypedSpec().Value.GetState())
		a.Contains(r.TypedSpec().Value.GetLastError(), "connection refused")
	})

	// A new upstream set replaces the old statuses.
	c := listener(t)
	cfg := proxyConfig("kubernetes", listen, c.Addr())
	h.Update(cfg)

	ctest.AssertResource(h, resources.UpstreamStatusID("kubernetes", c.Addr()), func(r *resources.UpstreamStatus, a *assert.Assertions) {
		a.Equal(health.StateHealthy, r.TypedSpec().Value.GetState())
	})
	ctest.AssertResource(h, "kubernetes", func(r *resources.ProxyStatus, a *assert.Assertions) {
		a.Equal(proxy.StateServing, r.TypedSpec().Value.GetState())
		a.Equal([]string{listen}, r.TypedSpec().Value.GetListen())
	})

	// The proxy's removal takes its statuses along.
	require.NoError(t, h.State.Destroy(h.Ctx(), cfg.Metadata()))

	ctest.AssertNoResource[*resources.ProxyStatus](h, "kubernetes")
	ctest.AssertNoResource[*resources.UpstreamStatus](h, resources.UpstreamStatusID("kubernetes", c.Addr()))
}

func TestControllerRetriesATakenPort(t *testing.T) {
	h := ctest.New(t, &proxy.Controller{Refresh: 10 * time.Millisecond})

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	up := listener(t)
	h.Create(proxyConfig("kubernetes", taken.Addr().String(), up.Addr()))

	ctest.AssertResource(h, "kubernetes", func(r *resources.ProxyStatus, a *assert.Assertions) {
		a.Equal(proxy.StateFailed, r.TypedSpec().Value.GetState())
		a.Contains(r.TypedSpec().Value.GetLastError(), "address already in use")
	})

	// KubePrism (say) lets go of the port: the proxy takes it without a config change.
	require.NoError(t, taken.Close())

	ctest.AssertResource(h, "kubernetes", func(r *resources.ProxyStatus, a *assert.Assertions) {
		a.Equal(proxy.StateServing, r.TypedSpec().Value.GetState())
		a.Empty(r.TypedSpec().Value.GetLastError())
		a.Equal([]string{taken.Addr().String()}, r.TypedSpec().Value.GetListen())
	})
}

// The controller's pushed API endpoints join the upstreams of a proxy that
// asks for them (beside, never instead of, the configured ones), carry
// clients, and leave when the push drops them; other proxies ignore them.
func TestControllerAddsPushedAPIEndpoints(t *testing.T) {
	h := ctest.New(t, &proxy.Controller{Refresh: 10 * time.Millisecond})

	configured, pushed := listener(t), listener(t)

	cfg := proxyConfig("kubernetes", "127.0.0.1:0", configured.Addr())
	cfg.TypedSpec().Value.PushedUpstreams = true
	h.Create(cfg)
	h.Create(proxyConfig("other", "127.0.0.1:0", configured.Addr()))

	ctest.AssertResource(h, "kubernetes", func(r *resources.ProxyStatus, a *assert.Assertions) {
		a.Equal(uint32(1), r.TypedSpec().Value.GetUpstreams(), "nothing pushed yet")
	})

	// The configured address pushed too stays a configured upstream.
	eps := resources.NewAPIEndpoints()
	eps.TypedSpec().Value.Endpoints = []string{configured.Addr(), pushed.Addr()}
	h.Create(eps)

	var listen string

	ctest.AssertResource(h, "kubernetes", func(r *resources.ProxyStatus, a *assert.Assertions) {
		a.Equal(uint32(2), r.TypedSpec().Value.GetUpstreams())
		a.Equal(uint32(2), r.TypedSpec().Value.GetHealthyUpstreams())

		if a.Len(r.TypedSpec().Value.GetListen(), 1) {
			listen = r.TypedSpec().Value.GetListen()[0]
		}
	})
	ctest.AssertResource(h, resources.UpstreamStatusID("kubernetes", pushed.Addr()), func(r *resources.UpstreamStatus, a *assert.Assertions) {
		a.True(r.TypedSpec().Value.GetPushed())
	})
	ctest.AssertResource(h, resources.UpstreamStatusID("kubernetes", configured.Addr()), func(r *resources.UpstreamStatus, a *assert.Assertions) {
		a.False(r.TypedSpec().Value.GetPushed())
	})
	ctest.AssertResource(h, "other", func(r *resources.ProxyStatus, a *assert.Assertions) {
		a.Equal(uint32(1), r.TypedSpec().Value.GetUpstreams(), "a proxy without pushedUpstreams took pushed ones")
	})

	// Round robin over both: the pushed one carries clients.
	for range 4 {
		c, err := net.Dial("tcp", listen)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() }) //nolint:errcheck
	}

	ctest.AssertResource(h, resources.UpstreamStatusID("kubernetes", pushed.Addr()), func(r *resources.UpstreamStatus, a *assert.Assertions) {
		a.Equal(uint64(2), r.TypedSpec().Value.GetActive())
	})

	// The push drops it: no new client goes there; its clients drain.
	eps.TypedSpec().Value.Endpoints = []string{configured.Addr()}
	h.Update(eps)

	ctest.AssertResource(h, "kubernetes", func(r *resources.ProxyStatus, a *assert.Assertions) {
		a.Equal(uint32(1), r.TypedSpec().Value.GetUpstreams())
	})
	ctest.AssertResource(h, resources.UpstreamStatusID("kubernetes", pushed.Addr()), func(r *resources.UpstreamStatus, a *assert.Assertions) {
		a.Equal("draining", r.TypedSpec().Value.GetState())
		a.Equal(uint64(2), r.TypedSpec().Value.GetActive(), "a dropped endpoint cut its connections")
		a.True(r.TypedSpec().Value.GetPushed(), "a draining upstream still came from the push")
	})
}

// gather returns the named metrics' samples as "name{labels}" → value, leaving out zeros.
func gather(t *testing.T, reg *prometheus.Registry, names ...string) map[string]float64 {
	t.Helper()

	families, err := reg.Gather()
	require.NoError(t, err)

	out := map[string]float64{}

	for _, f := range families {
		if !slices.Contains(names, f.GetName()) {
			continue
		}

		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}

			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			if v != 0 {
				out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
			}
		}
	}

	return out
}
