// Package ctest is a test harness for COSI controllers: an in-memory state
// with every talos-lb resource registered, a controller runtime running the
// controllers under test, and assertions that wait for outputs to converge.
//
// It plays the role of Talos's internal ctest package.
package ctest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/controller/runtime"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Harness runs controllers over an in-memory state for one test.
type Harness struct {
	T       *testing.T
	State   state.State
	Runtime *runtime.Runtime

	ctx context.Context //nolint:containedctx // the harness lives exactly as long as the test
}

// New starts a runtime with the given controllers; it stops when the test ends.
func New(t *testing.T, controllers ...controller.Controller) *Harness {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)

	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(ctx, st))

	rt, err := runtime.NewRuntime(st, zaptest.NewLogger(t))
	require.NoError(t, err)

	for _, c := range controllers {
		require.NoError(t, rt.RegisterController(c))
	}

	var wg sync.WaitGroup

	wg.Add(1)

	go func() {
		defer wg.Done()

		assert.NoError(t, rt.Run(ctx))
	}()

	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})

	return &Harness{T: t, State: st, Runtime: rt, ctx: ctx}
}

// Ctx is cancelled when the test ends.
func (h *Harness) Ctx() context.Context {
	return h.ctx
}

// Create puts an input resource into the state.
func (h *Harness) Create(r resource.Resource) {
	h.T.Helper()
	require.NoError(h.T, h.State.Create(h.ctx, r))
}

// Update replaces an input resource, keeping its version chain.
func (h *Harness) Update(r resource.Resource) {
	h.T.Helper()

	cur, err := h.State.Get(h.ctx, r.Metadata())
	require.NoError(h.T, err)

	r.Metadata().SetVersion(cur.Metadata().Version())
	require.NoError(h.T, h.State.Update(h.ctx, r))
}

// AssertResource waits until the resource exists and check passes.
func AssertResource[R rtestutils.ResourceWithRD](h *Harness, id resource.ID, check func(r R, a *assert.Assertions)) {
	h.T.Helper()
	rtestutils.AssertResource(h.ctx, h.T, h.State, id, check)
}

// AssertNoResource waits until the resource is gone.
func AssertNoResource[R rtestutils.ResourceWithRD](h *Harness, id resource.ID) {
	h.T.Helper()
	rtestutils.AssertNoResource[R](h.ctx, h.T, h.State, id)
}
