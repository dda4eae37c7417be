package netns_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
	"github.com/talos-lb/talos-lb/integration/vipcheck"
)

var (
	vip4 = vipcheck.VIP4
	vip6 = vipcheck.VIP6
)

type vipLab struct {
	t       *testing.T
	lab     *lab.Lab
	cluster *cluster.Cluster
	apis    map[string]*standin.APIServer
}

func startVIPLab(t *testing.T) *vipLab {
	t.Helper()

	l := lab.NewForTest(t, lab.Options{Nodes: 3, Router: true, Client: true, IPv6: true})
	apis, err := standin.StartAll(t.Context(), l.Nodes)
	if err != nil {
		t.Fatal(err)
	}

	v := &vipLab{t: t, lab: l, apis: apis}

	c, err := cluster.Start(t.Context(), l, cluster.ControlPlanes(vipcheck.Config(l)))
	if err != nil {
		t.Fatal(err)
	}

	v.cluster = c

	return v
}

func (v *vipLab) node(name string) *lab.Host {
	for _, h := range v.lab.Nodes {
		if h.Name == name {
			return h
		}
	}

	v.t.Fatalf("no node %s", name)

	return nil
}

func (v *vipLab) agent(name string) *cluster.Agent {
	for _, a := range v.cluster.Agents {
		if a.Host.Name == name {
			return a
		}
	}

	v.t.Fatalf("no agent %s", name)

	return nil
}

func (v *vipLab) waitHolder(nodes []*lab.Host, not string) string {
	v.t.Helper()

	name, err := vipcheck.WaitHolder(v.t.Context(), v.cluster, nodes, not, 20*time.Second)
	if err != nil {
		v.t.Fatal(err)
	}

	return name
}

func (v *vipLab) whoamiVia(ip netip.Addr, not string) string {
	v.t.Helper()

	name, _, err := vipcheck.FirstAnswer(v.t.Context(), v.lab.Client, ip, not, 20*time.Second)
	if err != nil {
		v.t.Fatal(err)
	}

	return name
}

func hasAddress(t *testing.T, h *lab.Host, ip netip.Addr) bool {
	t.Helper()

	has, err := vipcheck.HasAddress(h, ip)
	if err != nil {
		t.Fatal(err)
	}

	return has
}

type arpSampler struct{ *vipcheck.ARPSampler }

func startARPSampler(t *testing.T, client *lab.Host, ip netip.Addr) arpSampler {
	t.Helper()

	s, err := vipcheck.StartARPSampler(t.Context(), client, ip)
	if err != nil {
		t.Fatal(err)
	}

	return arpSampler{s}
}

// finish fails the test if two MACs ever answered in one round.
func (s arpSampler) finish(t *testing.T) {
	t.Helper()

	rounds, macs, split := s.Finish()
	t.Logf("ARP sampler: %d rounds, replies per MAC %v", rounds, macs)

	if len(split) > 0 {
		t.Errorf("two MACs answered for the VIP in %d rounds: %v", len(split), split)
	}
}

// neighMAC is the client's kernel neighbour entry for ip.
func neighMAC(t *testing.T, client *lab.Host, ip netip.Addr) string {
	t.Helper()

	mac, _, err := client.NeighMAC(ip)
	if err != nil {
		return ""
	}

	return mac.String()
}
