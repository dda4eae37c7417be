package configwatch

import (
	"context"
	"fmt"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"google.golang.org/protobuf/types/known/durationpb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/config"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// ProxySpec converts one configured proxy into its ProxyConfig spec;
// floating are the node's addresses that move (its VIPs).
func ProxySpec(p config.Proxy, floating []string) *resourcepb.ProxyConfigSpec {
	return &resourcepb.ProxyConfigSpec{
		Name:            p.Name,
		Listen:          p.Listen,
		Upstreams:       p.Upstreams,
		HealthCheck:     healthCheckSpec(p.Check.HealthCheck("", "")),
		Balance:         string(p.Balance),
		ConnectTimeout:  durationpb.New(p.ConnectTimeout.Duration),
		DialTimeout:     durationpb.New(p.DialTimeout.Duration),
		DrainPeriod:     durationpb.New(p.DrainPeriod.Duration),
		Keepalive:       durationpb.New(p.Keepalive.Duration),
		UserTimeout:     durationpb.New(p.UserTimeout.Duration),
		PushedUpstreams: p.PushedUpstreams,
		Floating:        floating,
	}
}

// publishProxies makes the ProxyConfig resources say what cfg says: one per
// proxy, none for a proxy the file no longer has. Proxies are a resource of
// their own, not part of AgentConfig, because the controller's pushes will
// feed them too.
func publishProxies(ctx context.Context, st state.State, cfg *config.Config) error {
	// On the VIP holder the VIP is an address of this node, but not for long:
	// it must not win the local tier over the node's own API server.
	var floating []string
	if cfg.VIP != nil {
		floating = cfg.VIP.Addresses
	}

	want := map[string]bool{}

	for _, p := range cfg.Proxies {
		want[p.Name] = true

		if err := safe.StateModify(ctx, st, resources.NewProxyConfig(p.Name), func(r *resources.ProxyConfig) error {
			r.TypedSpec().Value = ProxySpec(p, floating)

			return nil
		}); err != nil {
			return fmt.Errorf("publishing proxy %s: %w", p.Name, err)
		}
	}

	list, err := safe.StateListAll[*resources.ProxyConfig](ctx, st)
	if err != nil {
		return fmt.Errorf("listing proxy configs: %w", err)
	}

	for r := range list.All() {
		if want[r.Metadata().ID()] {
			continue
		}

		if err := st.Destroy(ctx, r.Metadata()); err != nil && !state.IsNotFoundError(err) {
			return fmt.Errorf("removing proxy %s: %w", r.Metadata().ID(), err)
		}
	}

	return nil
}
