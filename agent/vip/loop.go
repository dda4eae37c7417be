package vip

import (
	"context"

	"github.com/cosi-project/runtime/pkg/controller"
)

// onEvents runs reconcile for every input event until ctx ends: the whole
// loop of a controller that needs nothing but its inputs.
func onEvents(ctx context.Context, r controller.Runtime, reconcile func(context.Context, controller.Runtime) error) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		}

		if err := reconcile(ctx, r); err != nil {
			return err
		}
	}
}
