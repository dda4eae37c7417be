package push_test

import (
	"slices"
	"testing"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/require"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// pushedNodes lists the PushedNode resources as name -> address.
func (a *agent) pushedNodes() map[string]string {
	a.t.Helper()

	list, err := safe.StateListAll[*resources.PushedNode](a.t.Context(), a.st)
	require.NoError(a.t, err)

	out := map[string]string{}
	for r := range list.All() {
		require.Equal(a.t, r.Metadata().ID(), r.TypedSpec().Value.GetName())
		out[r.Metadata().ID()] = r.TypedSpec().Value.GetAddress()
	}

	return out
}

func TestPushedNodesArePublishedForGossip(t *testing.T) {
	dir := t.TempDir()
	a := newAgent(t, dir, nil)

	s := validState(5)
	s.Nodes = []*resourcepb.NodeAddress{
		{Name: "node-a", Address: "192.0.2.10"},
		{Name: "node-b", Address: "2001:db8::11"},
		{Name: "node-c", Address: "192.0.2.12"},
		{Name: "", Address: "192.0.2.13"},               // no name: dropped
		{Name: "node-d", Address: "node-d.example.com"}, // not an IP: dropped
		{Name: "node-c", Address: "192.0.2.99"},         // the first node-c wins
	}
	require.True(t, a.push(s).GetAccepted())
	require.Equal(t, map[string]string{"node-a": "192.0.2.10", "node-b": "2001:db8::11", "node-c": "192.0.2.12"}, a.pushedNodes())

	// A node that is no longer pushed goes; one that moved is updated.
	s = validState(6)
	s.Nodes = []*resourcepb.NodeAddress{{Name: "node-a", Address: "192.0.2.10"}, {Name: "node-b", Address: "192.0.2.11"}}
	require.True(t, a.push(s).GetAccepted())
	require.Equal(t, map[string]string{"node-a": "192.0.2.10", "node-b": "192.0.2.11"}, a.pushedNodes())

	// An agent that restarts finds the nodes again before any controller pushes,
	// so it can rejoin the gossip on its own.
	b := newAgent(t, dir, nil)
	require.Equal(t, map[string]string{"node-a": "192.0.2.10", "node-b": "192.0.2.11"}, b.pushedNodes())
}

func TestNodeWideReasonLandsInEveryNodeSet(t *testing.T) {
	a := newAgent(t, t.TempDir(), nil)

	s := validState(5)
	s.Ineligible = []*resourcepb.NodeReason{{Node: "node-a", Reason: "excluded by label x"}, {Node: "node-z", Reason: "node not ready"}}
	require.True(t, a.push(s).GetAccepted())

	for _, want := range s.GetNodeSets() {
		set, err := safe.StateGetByID[*resources.NodeSet](t.Context(), a.st, want.GetName())
		require.NoError(t, err)

		if slices.Contains(want.GetNodes(), "node-a") {
			require.Empty(t, set.TypedSpec().Value.GetExcluded()["node-a"])

			continue
		}

		require.Equal(t, "excluded by label x", set.TypedSpec().Value.GetExcluded()["node-a"], want.GetName())
		require.Empty(t, set.TypedSpec().Value.GetExcluded()["node-z"], "only this node's reason is kept")
	}
}
