package configwatch

import (
	"context"

	"github.com/cosi-project/runtime/pkg/state"
	"google.golang.org/protobuf/types/known/durationpb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/config"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

func bgpSpec(b *config.BGP) *resourcepb.BgpConfigSpec {
	spec := &resourcepb.BgpConfigSpec{Asn: b.ASN, RouterId: b.RouterID, ListenPort: uint32(b.ListenPort)} //nolint:gosec // validated to a port

	for _, p := range b.Peers {
		ps := &resourcepb.BgpPeerSpec{
			Name: p.Name, Address: p.Address, Port: uint32(p.Port), Asn: p.ASN, //nolint:gosec // validated to a port
			LocalAddress: p.LocalAddress,
			HoldTime:     durationpb.New(p.HoldTime.Duration),
			Keepalive:    durationpb.New(p.Keepalive.Duration),
			PasswordFile: p.PasswordFile,
			Multihop:     uint32(p.Multihop), //nolint:gosec // validated to 0..255
		}

		if p.BFD != nil {
			ps.Bfd = true
			ps.BfdMinTx = durationpb.New(p.BFD.MinTx.Duration)
			ps.BfdMinRx = durationpb.New(p.BFD.MinRx.Duration)
			ps.BfdMultiplier = uint32(p.BFD.Multiplier) //nolint:gosec // validated to 1..255
		}

		if p.GracefulRestart != nil {
			ps.GracefulRestart = true
			ps.RestartTime = durationpb.New(p.GracefulRestart.RestartTime.Duration)
		}

		spec.Peers = append(spec.Peers, ps)
	}

	return spec
}

// publishBGP makes BGPConfig say what cfg says, or removes it when the section is gone.
func publishBGP(ctx context.Context, st state.State, cfg *config.Config) error {
	return publishOptional(ctx, st, resources.NewBGPConfig(), cfg.BGP != nil, "bgp config", func(r *resources.BGPConfig) {
		r.TypedSpec().Value = bgpSpec(cfg.BGP)
	})
}
