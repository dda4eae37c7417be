package vip

import (
	"context"
	"fmt"
	"net"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// IPVSController makes the VIP holder balance API connections over every
// control-plane node's API server (active-active) instead of taking them all:
// one IPVSService per held VIP, real servers weighted by their health (an
// unhealthy one drains at weight 0). The ipvs package programs the kernel.
type IPVSController struct{}

// Name implements controller.Controller.
func (ctrl *IPVSController) Name() string {
	return "vip.IPVSController"
}

// Inputs implements controller.Controller.
func (ctrl *IPVSController) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.VIPNamespace, Type: resources.VIPConfigType, ID: optional.Some(resources.ControlPlaneID), Kind: controller.InputWeak},
		{Namespace: resources.VIPNamespace, Type: resources.VIPStatusType, Kind: controller.InputWeak},
		{Namespace: resources.AgentNamespace, Type: resources.EndpointHealthType, Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *IPVSController) Outputs() []controller.Output {
	return []controller.Output{{Type: resources.IPVSServiceType, Kind: controller.OutputShared}}
}

// Run implements controller.Controller.
func (ctrl *IPVSController) Run(ctx context.Context, r controller.Runtime, _ *zap.Logger) error {
	return onEvents(ctx, r, ctrl.reconcile)
}

func (ctrl *IPVSController) reconcile(ctx context.Context, r controller.Runtime) error {
	r.StartTrackingOutputs()

	cfg, err := safe.ReaderGetByID[*resources.VIPConfig](ctx, r, resources.ControlPlaneID)
	if err != nil && !state.IsNotFoundError(err) {
		return fmt.Errorf("reading vip config: %w", err)
	}

	if cfg != nil && cfg.TypedSpec().Value.GetIpvsPort() != 0 {
		spec := cfg.TypedSpec().Value

		servers, err := realServers(ctx, r, spec)
		if err != nil {
			return err
		}

		statuses, err := safe.ReaderListAll[*resources.VIPStatus](ctx, r)
		if err != nil {
			return fmt.Errorf("listing vip statuses: %w", err)
		}

		for s := range statuses.All() {
			if !s.TypedSpec().Value.GetHolding() {
				continue
			}

			address := s.TypedSpec().Value.GetAddress()

			// A VIP of a family no peer address has (an IPv6 VIP over IPv4 peers) has nothing to balance to.
			family := sameFamily(address, servers)
			if len(family) == 0 {
				continue
			}

			if err := safe.WriterModify(ctx, r, resources.NewIPVSService("vip-"+address), func(res *resources.IPVSService) error {
				res.TypedSpec().Value = &resourcepb.IPVSServiceSpec{
					Address: address, Port: spec.GetIpvsPort(), Protocol: "tcp",
					Scheduler: spec.GetIpvsScheduler(), Forwarding: "nat", Snat: true,
					RealServers: family,
				}

				return nil
			}); err != nil {
				return fmt.Errorf("writing ipvs service for %s: %w", address, err)
			}
		}
	}

	if err := r.CleanupOutputs(ctx, resources.NewIPVSService("").Metadata()); err != nil {
		return fmt.Errorf("cleaning up vip ipvs services: %w", err)
	}

	return nil
}

// realServers are the peers' API servers, weight 1 while their check passes.
func realServers(ctx context.Context, r controller.Reader, spec *resourcepb.VipConfigSpec) ([]*resourcepb.IPVSRealServerSpec, error) {
	var out []*resourcepb.IPVSRealServerSpec

	for _, p := range spec.GetPeers() {
		host, _, err := net.SplitHostPort(p.GetAddress())
		if err != nil {
			continue
		}

		h, err := safe.ReaderGetByID[*resources.EndpointHealth](ctx, r, resources.IPVSBackendCheckID(p.GetName()))
		if err != nil && !state.IsNotFoundError(err) {
			return nil, fmt.Errorf("reading backend health of %s: %w", p.GetName(), err)
		}

		var weight uint32
		if h != nil && h.TypedSpec().Value.GetHealthy() {
			weight = 1
		}

		out = append(out, &resourcepb.IPVSRealServerSpec{Address: host, Port: spec.GetIpvsBackendPort(), Weight: weight})
	}

	return out, nil
}

// sameFamily keeps the real servers of the VIP's address family: IPVS NAT does not translate families.
func sameFamily(vip string, servers []*resourcepb.IPVSRealServerSpec) []*resourcepb.IPVSRealServerSpec {
	v4 := net.ParseIP(vip).To4() != nil

	var out []*resourcepb.IPVSRealServerSpec

	for _, s := range servers {
		if (net.ParseIP(s.GetAddress()).To4() != nil) == v4 {
			out = append(out, s)
		}
	}

	return out
}
