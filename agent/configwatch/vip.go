package configwatch

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"google.golang.org/protobuf/types/known/durationpb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/config"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// vipSpec converts the vip section; the node name and state directory are the
// running ones, because the election identity cannot change under a live Raft.
func vipSpec(v *config.VIP, running *config.Config) *resourcepb.VipConfigSpec {
	spec := &resourcepb.VipConfigSpec{
		NodeName:           running.Node.Name,
		StateDir:           running.StateDir,
		Mode:               string(v.Mode),
		Communities:        v.Communities,
		LargeCommunities:   v.LargeCommunities,
		LocalPref:          v.LocalPref,
		Addresses:          v.Addresses,
		Link:               v.Link,
		HealthCheck:        v.HealthCheck,
		ElectionListen:     v.Election.Listen,
		HeartbeatTimeout:   durationpb.New(v.Election.HeartbeatTimeout.Duration),
		LeaderLeaseTimeout: durationpb.New(v.Election.LeaderLeaseTimeout.Duration),
		AnnounceCount:      uint32(v.Announce.Count), //nolint:gosec // validated to 1..50
		AnnounceInterval:   durationpb.New(v.Announce.Interval.Duration),
		AnnounceRefresh:    durationpb.New(v.Announce.Refresh.Duration),
	}

	if v.IPVS != nil {
		spec.IpvsPort = uint32(v.IPVS.Port)               //nolint:gosec // validated to a port
		spec.IpvsBackendPort = uint32(v.IPVS.BackendPort) //nolint:gosec // validated to a port
		spec.IpvsScheduler = v.IPVS.Scheduler
	}

	for _, p := range v.Election.Peers {
		spec.Peers = append(spec.Peers, &resourcepb.VipPeer{Name: p.Name, Address: p.Address})
	}

	return spec
}

// publishVIP makes VIPConfig say what cfg says, or removes it when the section is gone.
func publishVIP(ctx context.Context, st state.State, cfg, running *config.Config) error {
	return publishOptional(ctx, st, resources.NewVIPConfig(), cfg.VIP != nil, "vip config", func(r *resources.VIPConfig) {
		r.TypedSpec().Value = vipSpec(cfg.VIP, running)
	})
}

// publishOptional makes the singleton r carry what fill puts in it, or
// removes it when its config section is absent.
func publishOptional[R resource.Resource](ctx context.Context, st state.State, r R, present bool, what string, fill func(R)) error {
	if !present {
		if err := st.Destroy(ctx, r.Metadata()); err != nil && !state.IsNotFoundError(err) {
			return fmt.Errorf("removing %s: %w", what, err)
		}

		return nil
	}

	if err := safe.StateModify(ctx, st, r, func(r R) error {
		fill(r)

		return nil
	}); err != nil {
		return fmt.Errorf("publishing %s: %w", what, err)
	}

	return nil
}

// ipvsChecks probes every peer's API server the way the VIP's own gate
// probes the local one, so a holder knows which backends to send
// connections to the moment it takes over.
func ipvsChecks(cfg *config.Config) []*resourcepb.HealthCheckSpec {
	v := cfg.VIP
	if v == nil || v.IPVS == nil {
		return nil
	}

	gate := config.HealthCheck{Kind: config.CheckTCP, Interval: config.Duration{Duration: time.Second}, Timeout: config.Duration{Duration: time.Second}, Rise: 2, Fall: 2}

	for _, h := range cfg.HealthChecks {
		if h.Name == v.HealthCheck {
			gate = h
		}
	}

	out := make([]*resourcepb.HealthCheckSpec, 0, len(v.Election.Peers))

	for _, p := range v.Election.Peers {
		host, _, err := net.SplitHostPort(p.Address)
		if err != nil {
			continue
		}

		check := gate
		check.Name = resources.IPVSBackendCheckID(p.Name)
		check.Address = net.JoinHostPort(host, strconv.Itoa(v.IPVS.BackendPort))
		out = append(out, healthCheckSpec(check))
	}

	return out
}
