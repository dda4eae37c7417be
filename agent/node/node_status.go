// Package node publishes the agent's own NodeStatus: who it is (name, role,
// version), since when, its addresses and the config generation it runs.
// It owns NodeStatus only.
package node

import (
	"context"
	"fmt"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/talos-lb/talos-lb/pkg/netutil"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// StatusController writes NodeStatus from the config and the host's addresses.
type StatusController struct {
	Addresses netutil.AddressSource
	Version   string
	StartedAt time.Time
}

// Name implements controller.Controller.
func (ctrl *StatusController) Name() string {
	return "node.StatusController"
}

// Inputs implements controller.Controller.
func (ctrl *StatusController) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.ConfigNamespace, Type: resources.AgentConfigType, ID: optional.Some(resources.AgentConfigID), Kind: controller.InputWeak},
		{Namespace: resources.ConfigNamespace, Type: resources.ConfigStatusType, ID: optional.Some(resources.ConfigStatusID), Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *StatusController) Outputs() []controller.Output {
	return []controller.Output{{Type: resources.NodeStatusType, Kind: controller.OutputExclusive}}
}

// Run implements controller.Controller.
func (ctrl *StatusController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	changed := make(chan struct{}, 1)

	go func() {
		if err := ctrl.Addresses.Watch(ctx, changed); err != nil {
			logger.Warn("not watching address changes", zap.Error(err))
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-changed:
		}

		if err := ctrl.reconcile(ctx, r); err != nil {
			return err
		}
	}
}

func (ctrl *StatusController) reconcile(ctx context.Context, r controller.Runtime) error {
	r.StartTrackingOutputs()

	cfg, err := safe.ReaderGetByID[*resources.AgentConfig](ctx, r, resources.AgentConfigID)
	if err != nil && !state.IsNotFoundError(err) {
		return fmt.Errorf("reading agent config: %w", err)
	}

	if cfg != nil {
		var generation uint64

		cs, err := safe.ReaderGetByID[*resources.ConfigStatus](ctx, r, resources.ConfigStatusID)
		if err != nil && !state.IsNotFoundError(err) {
			return fmt.Errorf("reading config status: %w", err)
		}

		if cs != nil {
			generation = cs.TypedSpec().Value.GetGeneration()
		}

		addrs, err := ctrl.Addresses.Addresses()
		if err != nil {
			return err
		}

		name := cfg.TypedSpec().Value.GetNodeName()

		if err := safe.WriterModify(ctx, r, resources.NewNodeStatus(name), func(res *resources.NodeStatus) error {
			s := res.TypedSpec().Value
			s.NodeName = name
			s.Role = cfg.TypedSpec().Value.GetRole()
			s.Version = ctrl.Version
			s.StartedAt = timestamppb.New(ctrl.StartedAt)
			s.ConfigGeneration = generation
			s.Addresses = s.Addresses[:0]

			for _, a := range addrs {
				s.Addresses = append(s.Addresses, a.String())
			}

			return nil
		}); err != nil {
			return fmt.Errorf("writing node status: %w", err)
		}
	}

	if err := r.CleanupOutputs(ctx, resources.NewNodeStatus("").Metadata()); err != nil {
		return fmt.Errorf("cleaning up node status: %w", err)
	}

	return nil
}
