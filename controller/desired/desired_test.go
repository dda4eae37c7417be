package desired_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/controller/desired"
	"github.com/talos-lb/talos-lb/pkg/rank"
)

func nodes(names ...string) []desired.Node {
	out := make([]desired.Node, len(names))
	for i, n := range names {
		out[i] = desired.Node{Name: n, Address: "10.0.0." + n[len(n)-1:], Ready: true, Labels: map[string]string{"name": n}}
	}

	return out
}

func svc(key, ip, pool string) desired.Service {
	return desired.Service{Key: key, IPs: []netip.Addr{netip.MustParseAddr(ip)}, Pools: []string{pool}}
}

func set(out *desired.Output, name string) *resourcepb.NodeSet {
	for _, s := range out.Shared.NodeSets {
		if s.Name == name {
			return s
		}
	}

	return nil
}

func TestL2AllEligibleNodesRanked(t *testing.T) {
	in := &desired.Input{
		Nodes:    nodes("n1", "n2", "n3"),
		Services: []desired.Service{svc("default/web", "192.0.2.10", "pool-a")},
		L2:       []desired.L2Rule{{Name: "l2"}},
	}
	out := desired.Compute(in)

	require.Len(t, out.Shared.ServiceIps, 1)
	ip := out.Shared.ServiceIps[0]
	require.Equal(t, "192.0.2.10", ip.Address)
	require.Equal(t, []string{"default/web"}, ip.Services)
	require.Equal(t, "l2/l2", ip.L2.NodeSet)
	require.Equal(t, []string{"n1", "n2", "n3"}, set(out, "l2/l2").Nodes)

	view := out.Services["default/web"]
	require.Equal(t, []string{"l2"}, view.Protocols)
	require.Equal(t, rank.Order("192.0.2.10", []string{"n1", "n2", "n3"}), view.Ranking)
	require.Empty(t, view.Unannounced)
	require.Equal(t, 3, out.Eligible)

	st := out.State("n2")
	require.Equal(t, "n2", st.Node)
	require.Equal(t, out.Shared.ServiceIps, st.ServiceIps)
}

func TestNotReadyAndExcludedNodes(t *testing.T) {
	ns := nodes("n1", "n2", "n3")
	ns[0].Ready = false
	ns[1].Labels[desired.ExcludeLabel] = ""

	in := &desired.Input{Nodes: ns, Services: []desired.Service{svc("default/web", "192.0.2.10", "p")}, L2: []desired.L2Rule{{Name: "l2"}}}
	out := desired.Compute(in)
	s := set(out, "l2/l2")
	require.Equal(t, []string{"n3"}, s.Nodes)
	require.Empty(t, s.Excluded, "node-wide reasons are said once, not per set")
	require.Equal(t, []*resourcepb.NodeReason{{Node: "n1", Reason: desired.ReasonNotReady}, {Node: "n2", Reason: desired.ReasonExcluded}}, out.Shared.Ineligible)
	require.Equal(t, out.Shared.Ineligible, out.State("n3").Ineligible)
	require.Empty(t, out.Warnings)

	in.IgnoreExcludeLabel = true
	require.Equal(t, []string{"n2", "n3"}, set(desired.Compute(in), "l2/l2").Nodes)
}

// Talos labels every control-plane node; on a control-plane-only cluster that
// leaves no announcer, which MetalLB does silently.
func TestAllExcludedWarnsLoudly(t *testing.T) {
	ns := nodes("cp1")
	ns[0].Labels[desired.ExcludeLabel] = ""

	out := desired.Compute(&desired.Input{Nodes: ns, Services: []desired.Service{svc("default/web", "192.0.2.10", "p")}, L2: []desired.L2Rule{{Name: "l2"}}})
	require.Len(t, out.Warnings, 1)
	require.Contains(t, out.Warnings[0], "--ignore-exclude-label")
	require.Equal(t, "no eligible node", out.Services["default/web"].Unannounced)
}

func TestLocalTrafficPolicyNarrowsToEndpointNodes(t *testing.T) {
	s := svc("default/web", "192.0.2.10", "p")
	s.LocalOnly = true
	s.EndpointNodes = []string{"n3", "n1"}

	out := desired.Compute(&desired.Input{Nodes: nodes("n1", "n2", "n3"), Services: []desired.Service{s}, L2: []desired.L2Rule{{Name: "l2"}}, BGP: []desired.BGPRule{{Spec: &resourcepb.BgpAdvertisementRule{Name: "bgp"}}}})
	ip := out.Shared.ServiceIps[0]
	require.Equal(t, "l2/l2/default/web", ip.L2.NodeSet)
	l2 := set(out, ip.L2.NodeSet)
	require.Equal(t, []string{"n1", "n3"}, l2.Nodes)
	require.NotContains(t, l2.Excluded, "n2", "the common reason is the default, not a per-node entry")
	require.Equal(t, desired.ReasonNoLocalEndpoint, l2.DefaultReason)

	require.Len(t, ip.Bgp, 1)
	require.Equal(t, []string{"n1", "n3"}, set(out, ip.Bgp[0].NodeSet).Nodes)
	require.Equal(t, 2, out.Services["default/web"].BGPNodes)
	require.Equal(t, []string{"l2", "bgp"}, out.Services["default/web"].Protocols)

	s.EndpointNodes = nil
	out = desired.Compute(&desired.Input{Nodes: nodes("n1", "n2"), Services: []desired.Service{s}, L2: []desired.L2Rule{{Name: "l2"}}})
	require.Equal(t, "no eligible node with a ready local endpoint", out.Services["default/web"].Unannounced)
}

func TestAdvertisementSelectors(t *testing.T) {
	onlyPoolA := func(name string, _ map[string]string) bool { return name == "pool-a" }
	byLabel := func(name string, labels map[string]string) bool { return labels["tier"] == "public" }
	onlyN2 := func(l map[string]string) bool { return l["name"] == "n2" }

	in := &desired.Input{
		Nodes:      nodes("n1", "n2", "n3"),
		Services:   []desired.Service{svc("default/a", "192.0.2.1", "pool-a"), svc("default/b", "192.0.2.2", "pool-b"), svc("default/c", "192.0.2.3", "pool-c")},
		PoolLabels: map[string]map[string]string{"pool-b": {"tier": "public"}},
		L2:         []desired.L2Rule{{Name: "a", Pools: onlyPoolA, Nodes: onlyN2, Interfaces: []string{"eth1"}}},
		BGP:        []desired.BGPRule{{Pools: byLabel, Spec: &resourcepb.BgpAdvertisementRule{Name: "pub", Communities: []string{"65000:1"}}}},
	}
	out := desired.Compute(in)
	require.Len(t, out.Shared.ServiceIps, 3)

	a, b, c := out.Shared.ServiceIps[0], out.Shared.ServiceIps[1], out.Shared.ServiceIps[2]
	require.Equal(t, []string{"eth1"}, a.L2.Interfaces)
	require.Equal(t, []string{"n2"}, set(out, a.L2.NodeSet).Nodes)
	require.Empty(t, a.Bgp)

	require.Nil(t, b.L2)
	require.Len(t, b.Bgp, 1)
	require.Equal(t, []string{"n1", "n2", "n3"}, set(out, b.Bgp[0].NodeSet).Nodes)
	require.Equal(t, "pub", out.Shared.BgpAdvertisements[0].Name)

	require.Nil(t, c.L2)
	require.Empty(t, c.Bgp)
	require.Contains(t, out.Services["default/c"].Unannounced, `pool "pool-c"`)
}

func TestSeveralL2RulesJoin(t *testing.T) {
	n1 := func(l map[string]string) bool { return l["name"] == "n1" }
	n3 := func(l map[string]string) bool { return l["name"] == "n3" }

	out := desired.Compute(&desired.Input{
		Nodes:    nodes("n1", "n2", "n3"),
		Services: []desired.Service{svc("default/a", "192.0.2.1", "p")},
		L2:       []desired.L2Rule{{Name: "x", Nodes: n1, Interfaces: []string{"eth0"}}, {Name: "y", Nodes: n3}},
	})
	ip := out.Shared.ServiceIps[0]
	require.Equal(t, "l2/x+y", ip.L2.NodeSet)
	require.Equal(t, []string{"n1", "n3"}, set(out, ip.L2.NodeSet).Nodes)
	require.Empty(t, ip.L2.Interfaces, "one rule answers on every interface, so all do")
}

func TestSharedIPAndDualStack(t *testing.T) {
	dual := desired.Service{Key: "default/dual", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.5"), netip.MustParseAddr("2001:db8::5")}, Pools: []string{"p", "p"}}

	out := desired.Compute(&desired.Input{
		Nodes:    nodes("n1"),
		Services: []desired.Service{svc("ns/b", "192.0.2.1", "p"), svc("ns/a", "192.0.2.1", "p"), dual},
		L2:       []desired.L2Rule{{Name: "l2"}},
	})
	require.Len(t, out.Shared.ServiceIps, 3)
	require.Equal(t, []string{"ns/a", "ns/b"}, out.Shared.ServiceIps[0].Services)
	require.Equal(t, "192.0.2.5", out.Shared.ServiceIps[1].Address)
	require.Equal(t, "2001:db8::5", out.Shared.ServiceIps[2].Address)
}

func TestOutsidePoolIsNotAnnounced(t *testing.T) {
	out := desired.Compute(&desired.Input{Nodes: nodes("n1"), Services: []desired.Service{svc("ns/a", "198.51.100.1", "")}, L2: []desired.L2Rule{{Name: "l2"}}})
	require.Nil(t, out.Shared.ServiceIps[0].L2)
	require.NotEmpty(t, out.Services["ns/a"].Unannounced)
}

func TestPeersPerNode(t *testing.T) {
	rack1 := func(l map[string]string) bool { return l["name"] != "n3" }
	p1 := &resourcepb.PushedBgpPeer{Peer: &resourcepb.BgpPeerSpec{Name: "tor1"}}
	p2 := &resourcepb.PushedBgpPeer{Peer: &resourcepb.BgpPeerSpec{Name: "core"}}

	out := desired.Compute(&desired.Input{Nodes: nodes("n1", "n2", "n3"), Peers: []desired.Peer{{Nodes: rack1, Spec: p1}, {Spec: p2}}, APIEndpoints: []string{"10.0.0.2:6443", "10.0.0.1:6443"}})
	require.Len(t, out.State("n1").BgpPeers, 2)
	require.Len(t, out.State("n3").BgpPeers, 1)
	require.Equal(t, "core", out.State("n3").BgpPeers[0].Peer.Name)
	require.Equal(t, []string{"10.0.0.1:6443", "10.0.0.2:6443"}, out.State("n3").ApiEndpoints)
	require.Equal(t, "10.0.0.3", out.Nodes["n3"].Address)

	withPorts := desired.Compute(&desired.Input{Nodes: []desired.Node{{Name: "b", Address: "10.0.0.2:50070"}, {Name: "a", Address: "[fd00::1]:50070"}, {Name: "c"}}})
	require.Len(t, withPorts.State("a").Nodes, 2, "nodes without an address are left out")
	require.Equal(t, "fd00::1", withPorts.State("a").Nodes[0].Address)
	require.Equal(t, "b", withPorts.State("c").Nodes[1].Name)
}

// A Local set names the nodes the advertisement does not select (and the
// ineligible ones) and leaves "no local endpoints" to the default.
func TestLocalSetReasons(t *testing.T) {
	s := svc("default/web", "192.0.2.10", "p")
	s.LocalOnly = true
	s.EndpointNodes = []string{"n1", "n3", "n4"}
	ns := nodes("n1", "n2", "n3", "n4")
	ns[3].Ready = false
	notN3 := func(l map[string]string) bool { return l["name"] != "n3" }

	out := desired.Compute(&desired.Input{Nodes: ns, Services: []desired.Service{s}, L2: []desired.L2Rule{{Name: "l2", Nodes: notN3}}})
	l2 := set(out, out.Shared.ServiceIps[0].L2.NodeSet)
	require.Equal(t, []string{"n1"}, l2.Nodes)
	require.Equal(t, map[string]string{"n3": desired.ReasonNotSelected}, l2.Excluded)
	require.Equal(t, desired.ReasonNoLocalEndpoint, l2.DefaultReason)
}
