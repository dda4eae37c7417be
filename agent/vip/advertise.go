package vip

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"

	"github.com/talos-lb/talos-lb/pkg/resources"
)

// AdvertiseController announces a BGP-mode VIP over BGP from every node that
// holds it (every healthy control-plane node), so routers spread API
// connections over them with ECMP, and withdraws it when the node stops holding.
type AdvertiseController struct{}

// Name implements controller.Controller.
func (ctrl *AdvertiseController) Name() string {
	return "vip.AdvertiseController"
}

// Inputs implements controller.Controller.
func (ctrl *AdvertiseController) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.VIPNamespace, Type: resources.VIPConfigType, ID: optional.Some(resources.ControlPlaneID), Kind: controller.InputWeak},
		{Namespace: resources.VIPNamespace, Type: resources.VIPStatusType, Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *AdvertiseController) Outputs() []controller.Output {
	return []controller.Output{{Type: resources.BGPAdvertisementType, Kind: controller.OutputShared}}
}

// Run implements controller.Controller.
func (ctrl *AdvertiseController) Run(ctx context.Context, r controller.Runtime, _ *zap.Logger) error {
	return onEvents(ctx, r, ctrl.reconcile)
}

func (ctrl *AdvertiseController) reconcile(ctx context.Context, r controller.Runtime) error {
	r.StartTrackingOutputs()

	cfg, err := safe.ReaderGetByID[*resources.VIPConfig](ctx, r, resources.ControlPlaneID)
	if err != nil && !state.IsNotFoundError(err) {
		return fmt.Errorf("reading vip config: %w", err)
	}

	if cfg != nil && cfg.TypedSpec().Value.GetMode() == "bgp" {
		statuses, err := safe.ReaderListAll[*resources.VIPStatus](ctx, r)
		if err != nil {
			return fmt.Errorf("listing vip statuses: %w", err)
		}

		for s := range statuses.All() {
			ip, err := netip.ParseAddr(s.TypedSpec().Value.GetAddress())
			if err != nil || !s.TypedSpec().Value.GetHolding() {
				continue
			}

			prefix := netip.PrefixFrom(ip, ip.BitLen()).String()

			if err := safe.WriterModify(ctx, r, resources.NewBGPAdvertisement("vip/"+prefix), func(a *resources.BGPAdvertisement) error {
				spec := cfg.TypedSpec().Value
				a.TypedSpec().Value.Prefix = prefix
				a.TypedSpec().Value.Owner = "vip"
				a.TypedSpec().Value.Communities = spec.GetCommunities()
				a.TypedSpec().Value.LargeCommunities = spec.GetLargeCommunities()
				a.TypedSpec().Value.LocalPref = spec.GetLocalPref()

				return nil
			}); err != nil {
				return fmt.Errorf("writing bgp advertisement %s: %w", prefix, err)
			}
		}
	}

	if err := r.CleanupOutputs(ctx, resources.NewBGPAdvertisement("").Metadata()); err != nil {
		return fmt.Errorf("cleaning up vip advertisements: %w", err)
	}

	return nil
}
