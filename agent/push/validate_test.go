package push_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/talos-lb/talos-lb/agent/push"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// validState is a state for node-a using every part of the protocol.
func validState(gen uint64) *resourcepb.NodeDesiredState {
	return &resourcepb.NodeDesiredState{
		Generation: gen,
		Node:       "node-a",
		Controller: "controller-0",
		NodeSets: []*resourcepb.NodeSet{
			{Name: "all", Nodes: []string{"node-a", "node-b"}},
			{Name: "local", Nodes: []string{"node-b"}, DefaultReason: "no local endpoints"},
		},
		BgpAdvertisements: []*resourcepb.BgpAdvertisementRule{
			{Name: "tor", Communities: []string{"65000:1", "no-export"}, LargeCommunities: []string{"65000:1:2"}, AggregationLength: 32, AggregationLengthV6: 128},
		},
		ServiceIps: []*resourcepb.ServiceIPSpec{
			{Address: "192.0.2.1", Services: []string{"default/web"}, L2: &resourcepb.L2Announcement{NodeSet: "all"}},
			{Address: "192.0.2.2", Services: []string{"default/a", "default/b"}, L2: &resourcepb.L2Announcement{NodeSet: "local", Interfaces: []string{"eth0"}}},
			{Address: "2001:db8::1", Services: []string{"default/v6"}, Bgp: []*resourcepb.BgpAnnouncement{{Advertisement: "tor", NodeSet: "all"}}},
			{Address: "192.0.2.4", Services: []string{"default/c"}, L2: &resourcepb.L2Announcement{NodeSet: "all"}},
		},
		BgpPeers: []*resourcepb.PushedBgpPeer{
			{Peer: &resourcepb.BgpPeerSpec{Name: "tor-1", Address: "192.0.2.254", Asn: 65001}, LocalAsn: 65000, Password: "s3cret"},
			{Peer: &resourcepb.BgpPeerSpec{Name: "tor-2", Address: "2001:db8::fe", Asn: 65001, LocalAddress: "2001:db8::10"}, LocalAsn: 65000},
		},
		ApiEndpoints: []string{"192.0.2.10:6443", "[2001:db8::10]:6443", "cp-1.example.com:6443"},
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(s *resourcepb.NodeDesiredState)
		want   string // "" means valid
	}{
		{"valid", func(*resourcepb.NodeDesiredState) {}, ""},
		{"unknown ranking entries are fine", func(s *resourcepb.NodeDesiredState) {
			s.NodeSets[0].Nodes = append(s.NodeSets[0].Nodes, "node-nobody-knows")
		}, ""},
		{"empty state", func(s *resourcepb.NodeDesiredState) { proto.Reset(s); s.Node = "node-a"; s.Generation = 1 }, ""},
		{"another node", func(s *resourcepb.NodeDesiredState) { s.Node = "node-b" }, "state for node-b pushed to node-a"},
		{"no node", func(s *resourcepb.NodeDesiredState) { s.Node = "" }, "state names no node (pushed to node-a)"},
		{"generation 0", func(s *resourcepb.NodeDesiredState) { s.Generation = 0 }, "generation 0"},
		{"bad address", func(s *resourcepb.NodeDesiredState) { s.ServiceIps[3].Address = "192.0.2.300" }, `service_ips[3].address "192.0.2.300" is not an IP address`},
		{"not canonical", func(s *resourcepb.NodeDesiredState) { s.ServiceIps[2].Address = "2001:DB8::1" }, `service_ips[2].address "2001:DB8::1" is not in canonical form (2001:db8::1)`},
		{"zone", func(s *resourcepb.NodeDesiredState) { s.ServiceIps[2].Address = "fe80::1%eth0" }, "carries a zone"},
		{"unspecified", func(s *resourcepb.NodeDesiredState) { s.ServiceIps[0].Address = "0.0.0.0" }, "service_ips[0].address 0.0.0.0 cannot be a service IP"},
		{"duplicate address", func(s *resourcepb.NodeDesiredState) { s.ServiceIps[3].Address = "192.0.2.1" }, "service_ips[3].address 192.0.2.1 repeats service_ips[0]"},
		{"nil service IP", func(s *resourcepb.NodeDesiredState) { s.ServiceIps[1] = nil }, "service_ips[1] is empty"},
		{"l2 without node set", func(s *resourcepb.NodeDesiredState) { s.ServiceIps[0].L2.NodeSet = "" }, "service_ips[0].l2.node_set is empty"},
		{"l2 unknown node set", func(s *resourcepb.NodeDesiredState) { s.ServiceIps[1].L2.NodeSet = "gone" }, `service_ips[1].l2.node_set "gone" is not in node_sets`},
		{"bgp unknown advertisement", func(s *resourcepb.NodeDesiredState) { s.ServiceIps[2].Bgp[0].Advertisement = "x" }, `service_ips[2].bgp[0].advertisement "x" is not in bgp_advertisements`},
		{"bgp unknown node set", func(s *resourcepb.NodeDesiredState) { s.ServiceIps[2].Bgp[0].NodeSet = "x" }, `service_ips[2].bgp[0].node_set "x" is not in node_sets`},
		{"node set without name", func(s *resourcepb.NodeDesiredState) { s.NodeSets[1].Name = "" }, "node_sets[1].name is empty"},
		{"duplicate node set", func(s *resourcepb.NodeDesiredState) { s.NodeSets[1].Name = "all" }, `node_sets[1].name "all" repeats node_sets[0]`},
		{"advertisement without name", func(s *resourcepb.NodeDesiredState) { s.BgpAdvertisements[0].Name = "" }, "bgp_advertisements[0].name is empty"},
		{"bad community", func(s *resourcepb.NodeDesiredState) { s.BgpAdvertisements[0].Communities[1] = "70000:1" }, "bgp_advertisements[0].communities[1]"},
		{"bad large community", func(s *resourcepb.NodeDesiredState) { s.BgpAdvertisements[0].LargeCommunities[0] = "1:2" }, "bgp_advertisements[0].large_communities[0]"},
		{"aggregation too long", func(s *resourcepb.NodeDesiredState) { s.BgpAdvertisements[0].AggregationLength = 33 }, "bgp_advertisements[0].aggregation_length 33"},
		{"v6 aggregation too long", func(s *resourcepb.NodeDesiredState) { s.BgpAdvertisements[0].AggregationLengthV6 = 129 }, "bgp_advertisements[0].aggregation_length_v6 129"},
		{"peer without spec", func(s *resourcepb.NodeDesiredState) { s.BgpPeers[1].Peer = nil }, "bgp_peers[1].peer is missing"},
		{"peer without name", func(s *resourcepb.NodeDesiredState) { s.BgpPeers[0].Peer.Name = "" }, "bgp_peers[0].peer.name is empty"},
		{"peer name a path", func(s *resourcepb.NodeDesiredState) { s.BgpPeers[0].Peer.Name = "../etc" }, `bgp_peers[0].peer.name "../etc"`},
		{"peer without address", func(s *resourcepb.NodeDesiredState) { s.BgpPeers[1].Peer.Address = "" }, `bgp_peers[1].peer.address "" is not an IP address (peer tor-2)`},
		{"peer without ASN", func(s *resourcepb.NodeDesiredState) { s.BgpPeers[0].Peer.Asn = 0 }, "bgp_peers[0].peer.asn is missing (peer tor-1)"},
		{"peer port", func(s *resourcepb.NodeDesiredState) { s.BgpPeers[0].Peer.Port = 70000 }, "bgp_peers[0].peer.port 70000"},
		{"peer local address family", func(s *resourcepb.NodeDesiredState) { s.BgpPeers[1].Peer.LocalAddress = "192.0.2.3" }, "bgp_peers[1].peer.local_address 192.0.2.3 is not of the family"},
		{"duplicate peer", func(s *resourcepb.NodeDesiredState) { s.BgpPeers[1].Peer.Name = "tor-1" }, `bgp_peers[1].peer.name "tor-1" repeats bgp_peers[0]`},
		{"endpoint without port", func(s *resourcepb.NodeDesiredState) { s.ApiEndpoints[1] = "192.0.2.10" }, `api_endpoints[1] "192.0.2.10": want host:port`},
		{"endpoint port 0", func(s *resourcepb.NodeDesiredState) { s.ApiEndpoints[0] = "192.0.2.10:0" }, `api_endpoints[0] "192.0.2.10:0": port "0" is not 1-65535`},
		{"endpoint without host", func(s *resourcepb.NodeDesiredState) { s.ApiEndpoints[2] = ":6443" }, `api_endpoints[2] ":6443": no host`},
		{"ineligible without reason", func(s *resourcepb.NodeDesiredState) { s.Ineligible = []*resourcepb.NodeReason{{Node: "node-b"}} }, `ineligible[0] needs a node and a reason, has "node-b" and ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validState(1)
			tc.change(s)

			err := push.Validate("node-a", s)
			if tc.want == "" {
				require.NoError(t, err)

				return
			}

			require.ErrorContains(t, err, tc.want)
		})
	}

	require.ErrorContains(t, push.Validate("node-a", nil), "no state")
}
