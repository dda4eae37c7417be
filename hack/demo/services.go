package main

import (
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/controller/desired"
	"github.com/talos-lb/talos-lb/integration/bgpcheck"
	"github.com/talos-lb/talos-lb/integration/l2check"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
)

// svcBGP is the demo's BGP-mode service IP: outside the lab's subnets, so only
// the router's routes lead there.
var svcBGP = netip.MustParseAddr("10.99.0.200")

const bgpPool = "bgp"

// serviceIPs plays lb-controller: the controller's own code (controller/desired
// and controller/push) computes every node's state for two LoadBalancer
// Services, pushes it to the agents and stops. This is the lightweight mode
// (no Kubernetes): the real lb-controller against a kube-apiserver is what the
// k8s test tier runs (make test-k8s, docs/controller.md).
func (d *demo) serviceIPs(bird *lab.BIRD) error {
	in := l2check.Input(d.c, []netip.Addr{l2check.SVC4, l2check.SVC6}, nil)
	// The L2 advertisement takes the L2 pool only; a BGP advertisement the other.
	in.L2[0].Pools = func(pool string, _ map[string]string) bool { return pool == l2check.Pool }
	in.Services = append(in.Services, desired.Service{Key: "default/api", IPs: []netip.Addr{svcBGP}, Pools: []string{bgpPool}})
	in.APIEndpoints = apiEndpoints(d.lab)
	in.BGP = []desired.BGPRule{{
		Pools: func(pool string, _ map[string]string) bool { return pool == bgpPool },
		Spec:  &resourcepb.BgpAdvertisementRule{Name: "demo", Communities: []string{"65000:300"}},
	}}
	in.Peers = []desired.Peer{{Spec: &resourcepb.PushedBgpPeer{LocalAsn: bgpcheck.NodeASN, Peer: &resourcepb.BgpPeerSpec{
		Name: "router", Address: d.lab.Router.IPv4.String(), Asn: lab.RouterAS,
		HoldTime: durationpb.New(3 * time.Second), Keepalive: durationpb.New(time.Second),
	}}}}

	step("controller: pushing Services default/web (L2: %s, %s) and default/api (BGP: %s) and the API servers' endpoints to every agent, then stopping (lightweight mode, no Kubernetes)", l2check.SVC4, l2check.SVC6, svcBGP)

	if _, err := l2check.Push(d.ctx, d.c, in, 30*time.Second); err != nil {
		return err
	}

	if err := l2check.WaitGossip(d.ctx, d.c, d.lab.Nodes, 30*time.Second); err != nil {
		return err
	}

	owner, err := l2check.WaitOwner(d.ctx, d.c, d.lab.Nodes, l2check.SVC4, "", 30*time.Second)
	if err != nil {
		return err
	}

	for _, args := range [][]string{{"get", "members"}, {"get", "l2", l2check.SVC4.String()}, {"get", "svcbgp"}, {"get", "push"}} {
		if err := d.lbctl(args...); err != nil {
			return err
		}
	}

	if err := d.client("arping", "-c", "1", "-w", "2", "-I", "eth0", l2check.SVC4.String()); err != nil {
		return err
	}

	if err := d.client("ndisc6", "-1", "-r", "3", "-w", "500", l2check.SVC6.String(), "eth0"); err != nil {
		return err
	}

	name, err := standin.Whoami(d.ctx, d.lab.Client, l2check.SVC4.AsSlice(), 2*time.Second)
	if err != nil {
		return err
	}

	step("TCP from the client to %s: answered by %s (the L2 owner is %s; kube-proxy's part is played by an nftables redirect)", l2check.SVC4, name, owner)

	if _, err := bgpcheck.WaitNextHops(d.lab, netip.PrefixFrom(svcBGP, 32), len(d.lab.Nodes), 30*time.Second); err != nil {
		return err
	}

	out, err := bird.Cmd("show", "route", "all", svcBGP.String()+"/32")
	if err != nil {
		return err
	}

	step("BIRD router: birdc show route all %s/32 (one path per node, multipath into the kernel)", svcBGP)
	fmt.Print(out)

	seen := map[string]int{}

	for range 30 {
		name, err := standin.Whoami(d.ctx, d.lab.Client, svcBGP.AsSlice(), 2*time.Second)
		if err != nil {
			return err
		}

		seen[name]++
	}

	step("30 TCP connections from the client to %s through the router (ECMP): %v", svcBGP, seen)

	return d.serviceFailover(owner)
}

// serviceFailover crashes the L2 owner of the service IP with the controller
// down: the agents' gossip notices, the next-ranked node answers ARP.
func (d *demo) serviceFailover(owner string) error {
	a := l2check.Agent(d.c, owner)
	h := l2check.Node(d.lab, owner)

	oldMAC, _, err := d.lab.Client.NeighMAC(l2check.SVC4)
	if err != nil {
		return fmt.Errorf("the client has no neighbour entry for %s: %w", l2check.SVC4, err)
	}

	step("crash with the controller down: freezing %s's agent (SIGSTOP) and cutting its cable", owner)

	if err := a.Proc.Signal(syscall.SIGSTOP); err != nil {
		return err
	}

	if err := d.lab.SetPortUp(h, false); err != nil {
		return err
	}

	fault := time.Now()

	mac, at, err := l2check.FirstARPReply(d.ctx, d.lab.Client, l2check.SVC4, oldMAC, 30*time.Second)
	if err != nil {
		return err
	}

	next, err := standin.Whoami(d.ctx, d.lab.Client, l2check.SVC4.AsSlice(), 5*time.Second)
	if err != nil {
		return err
	}

	step("a new owner answered ARP for %s %d ms after the crash (MAC %s); TCP now reaches %s", l2check.SVC4, at.Sub(fault).Milliseconds(), mac, next)

	var alive []string

	for _, n := range d.lab.Nodes {
		if n.Name != owner {
			alive = append(alive, n.IPv4.String())
		}
	}

	if err := d.lbctl("-n", strings.Join(alive, ","), "get", "l2", l2check.SVC4.String()); err != nil {
		return err
	}

	step("thawing %s and plugging it back in: it takes its IP back as the best-ranked live node", owner)

	if err := a.Proc.Signal(syscall.SIGCONT); err != nil {
		return err
	}

	return d.lab.SetPortUp(h, true)
}
