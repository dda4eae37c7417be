package daemon

import (
	"context"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/talos-lb/talos-lb/pkg/resources"
)

// handOffBudget bounds the orderly part of a shutdown: Talos kills the
// service 10 s after SIGTERM, and the rest of the shutdown needs time too.
const handOffBudget = 3 * time.Second

// handOff tells the controllers the agent is stopping and waits until the
// election says the VIP is let go and leadership handed over (or that this
// node takes no part), so peers take over within milliseconds instead of
// waiting for a heartbeat timeout.
func handOff(ctx context.Context, st state.State, logger *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handOffBudget)
	defer cancel()

	start := time.Now()

	if err := safe.StateModify(ctx, st, resources.NewAgentLifecycle(), func(r *resources.AgentLifecycle) error {
		r.TypedSpec().Value.ShuttingDown = true
		r.TypedSpec().Value.Since = timestamppb.Now()

		return nil
	}); err != nil {
		logger.Warn("announcing shutdown to controllers", zap.Error(err))

		return
	}

	// Only an elected (L2) VIP has leadership to hand over.
	if cfg, err := safe.StateGetByID[*resources.VIPConfig](ctx, st, resources.ControlPlaneID); err != nil || cfg.TypedSpec().Value.GetMode() == "bgp" {
		return
	}

	_, err := safe.StateWatchFor[*resources.VIPLeadership](ctx, st, resources.NewVIPLeadership().Metadata(),
		state.WithCondition(func(r resource.Resource) (bool, error) {
			l, ok := r.(*resources.VIPLeadership)

			return ok && l.TypedSpec().Value.GetHandedOff(), nil
		}))
	if err != nil {
		logger.Warn("VIP hand-off did not finish; peers take over after the heartbeat timeout", zap.Error(err))

		return
	}

	logger.Info("VIP handed off", zap.Duration("took", time.Since(start)))
}
