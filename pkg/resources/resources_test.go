package resources_test

import (
	"context"
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/pkg/resources"
)

func TestRegisterAndRoundTrip(t *testing.T) {
	ctx := context.Background()
	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(ctx, st))

	rds, err := safe.StateListAll[*meta.ResourceDefinition](ctx, st)
	require.NoError(t, err)

	types := map[resource.Type]bool{}
	for rd := range rds.All() {
		types[rd.TypedSpec().Type] = true
	}

	for _, d := range resources.Definitions() {
		require.True(t, types[d.Type], "definition of %s registered", d.Type)
	}

	// A spec must survive the protobuf codec used on the wire.
	h := resources.NewEndpointHealth("apiserver")
	h.TypedSpec().Value.Address = "127.0.0.1:6443"
	h.TypedSpec().Value.Healthy = true

	p, err := protobuf.FromResource(h)
	require.NoError(t, err)

	back, err := protobuf.UnmarshalResource(p)
	require.NoError(t, err)

	got, ok := back.(*resources.EndpointHealth)
	require.True(t, ok, "decoded as %T", back)
	require.Equal(t, "127.0.0.1:6443", got.TypedSpec().Value.Address)
	require.True(t, got.TypedSpec().Value.Healthy)
}
