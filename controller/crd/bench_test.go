package crd_test

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/talos-lb/talos-lb/controller/crd"
)

// benchObjects is a large configuration: 50 pools, 40 peers (one per rack
// pair), 20 BGP and 10 L2 advertisements with pool and node selectors.
func benchObjects() crd.Objects {
	var in crd.Objects

	for i := range 50 {
		in.Pools = append(in.Pools, &crd.IPAddressPool{
			ObjectMeta: metav1.ObjectMeta{Namespace: "lb", Name: fmt.Sprintf("pool-%d", i), Labels: map[string]string{"tier": fmt.Sprint(i % 5)}},
			Spec:       crd.IPAddressPoolSpec{Addresses: []string{fmt.Sprintf("10.%d.0.0/16", i)}},
		})
	}

	for i := range 40 {
		in.Peers = append(in.Peers, &crd.BGPPeer{
			ObjectMeta: metav1.ObjectMeta{Namespace: "lb", Name: fmt.Sprintf("tor-%d", i)},
			Spec: crd.BGPPeerSpec{
				MyASN: 65000, PeerASN: 65100, PeerAddress: fmt.Sprintf("192.168.%d.1", i),
				NodeSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "rack", Operator: metav1.LabelSelectorOpIn, Values: []string{fmt.Sprint(i), fmt.Sprint(i + 40)}},
				}}},
			},
		})
	}

	for i := range 20 {
		in.BGPAdvertisements = append(in.BGPAdvertisements, &crd.BGPAdvertisement{
			ObjectMeta: metav1.ObjectMeta{Namespace: "lb", Name: fmt.Sprintf("bgp-%d", i)},
			Spec: crd.BGPAdvertisementSpec{
				IPAddressPoolSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": fmt.Sprint(i % 5)}}},
				NodeSelectors:          []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": fmt.Sprint(i % 4)}}},
			},
		})
	}

	for i := range 10 {
		in.L2Advertisements = append(in.L2Advertisements, &crd.L2Advertisement{
			ObjectMeta: metav1.ObjectMeta{Namespace: "lb", Name: fmt.Sprintf("l2-%d", i)},
			Spec: crd.L2AdvertisementSpec{
				IPAddressPools: []string{fmt.Sprintf("pool-%d", i), fmt.Sprintf("pool-%d", i+10)},
				NodeSelectors:  []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": fmt.Sprint(i % 4)}}},
			},
		})
	}

	return in
}

func benchNodes(n int) []map[string]string {
	nodes := make([]map[string]string, n)
	for i := range nodes {
		nodes[i] = map[string]string{
			"kubernetes.io/hostname": fmt.Sprintf("node-%d", i),
			"rack":                   fmt.Sprint(i % 80),
			"zone":                   fmt.Sprint(i % 4),
		}
	}

	return nodes
}

// BenchmarkRecompute is what one configuration change costs the controller:
// compile, then every node's view for 1,000 nodes, then for 10,000
// services (200 per pool) one lookup per node of the pool's L2 and BGP
// announcements, 2 × 10^7 lookups in all, by pool index.
func BenchmarkRecompute(b *testing.B) {
	in := benchObjects()
	nodes := benchNodes(1000)

	b.ReportAllocs()

	for b.Loop() {
		cfg, _ := crd.Compile(in)

		views := make([]*crd.NodeConfig, len(nodes))
		for i, n := range nodes {
			views[i] = cfg.ForNode(n)
		}

		announced := 0

		for s := range 10000 {
			pool, _ := cfg.PoolIndex(cfg.Pools[s%len(cfg.Pools)].Name)
			for _, v := range views {
				announced += len(v.L2AdvertisementsAt(pool)) + len(v.BGPAnnouncementsAt(pool))
			}
		}

		if announced == 0 {
			b.Fatal("nothing announced")
		}
	}
}

// BenchmarkLookupByName is one lookup by pool name, for comparison with the
// index lookups above.
func BenchmarkLookupByName(b *testing.B) {
	cfg, _ := crd.Compile(benchObjects())
	v := cfg.ForNode(benchNodes(1)[0])

	for b.Loop() {
		_ = v.BGPAnnouncements("pool-7")
	}
}

// BenchmarkForNode1000 is the per-node part alone.
func BenchmarkForNode1000(b *testing.B) {
	cfg, _ := crd.Compile(benchObjects())
	nodes := benchNodes(1000)

	b.ReportAllocs()

	for b.Loop() {
		for _, n := range nodes {
			cfg.ForNode(n)
		}
	}
}
