package netns_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/controller/desired"
	"github.com/talos-lb/talos-lb/integration/bgpcheck"
	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/l2check"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
)

// Service IPs announced over BGP: outside the lab's subnets, so only routes lead there.
var (
	bgpSvc4      = netip.MustParsePrefix("10.99.0.200/32")
	bgpSvc6      = netip.MustParsePrefix("fd99::200/128")
	bgpSvcOnlyA  = netip.MustParsePrefix("10.99.0.201/32")
	routerSecond = netip.MustParseAddr("10.77.0.2")
)

// svcBGPLab is agents without any bgp section in their config: every BGP
// setting reaches them in the controller's push.
type svcBGPLab struct {
	t       *testing.T
	lab     *lab.Lab
	cluster *cluster.Cluster
}

func startSvcBGPLab(t *testing.T) *svcBGPLab {
	t.Helper()

	l := lab.NewForTest(t, lab.Options{Nodes: 3, Router: true, Client: true, IPv6: true})

	c, err := cluster.Start(t.Context(), l, cluster.Options{Node: func(int, *lab.Host) cluster.NodeConfig {
		return cluster.NodeConfig{Role: "worker"}
	}})
	if err != nil {
		t.Fatal(err)
	}

	return &svcBGPLab{t: t, lab: l, cluster: c}
}

func pushedPeer(name, address string, asn, localASN uint32) desired.Peer {
	return desired.Peer{Spec: &resourcepb.PushedBgpPeer{LocalAsn: localASN, Peer: &resourcepb.BgpPeerSpec{
		Name: name, Address: address, Asn: asn, HoldTime: durationpb.New(3 * time.Second), Keepalive: durationpb.New(time.Second),
	}}}
}

// service is a LoadBalancer Service of the lab: its IPs from one pool;
// endpointNodes nil is externalTrafficPolicy: Cluster, else Local with
// endpoints on those nodes.
func service(key, pool string, endpointNodes []string, ips ...netip.Prefix) desired.Service {
	s := desired.Service{Key: key, LocalOnly: endpointNodes != nil, EndpointNodes: endpointNodes}

	for _, ip := range ips {
		s.IPs = append(s.IPs, ip.Addr())
		s.Pools = append(s.Pools, pool)
	}

	return s
}

// onlyPool selects one pool by name.
func onlyPool(pool string) desired.Names {
	return func(name string, _ map[string]string) bool { return name == pool }
}

func (v *svcBGPLab) input(peers []desired.Peer, rules []desired.BGPRule, services ...desired.Service) *desired.Input {
	in := &desired.Input{Peers: peers, BGP: rules, Services: services}

	for _, a := range v.cluster.Agents {
		in.Nodes = append(in.Nodes, desired.Node{Name: a.Host.Name, Address: cluster.Endpoint(a.Host.IPv4), Labels: map[string]string{}, Ready: true})
	}

	return in
}

// push pushes in through the controller's code and stops, as a controller
// that went away; it returns what each agent said it announces.
func (v *svcBGPLab) push(in *desired.Input) map[string][]string {
	v.t.Helper()

	announcing, err := l2check.Push(v.t.Context(), v.cluster, in, 30*time.Second)
	if err != nil {
		v.t.Fatal(err)
	}

	return announcing
}

func (v *svcBGPLab) nodeIPs(names ...string) []netip.Addr {
	var out []netip.Addr

	for _, h := range v.lab.Nodes {
		if len(names) == 0 || slices.Contains(names, h.Name) {
			out = append(out, h.IPv4)
		}
	}

	slices.SortFunc(out, netip.Addr.Compare)

	return out
}

// waitHops waits until the router's main-table route toward prefix goes
// exactly to the nodes named (all when none is named).
func (v *svcBGPLab) waitHops(bird *lab.BIRD, prefix netip.Prefix, names ...string) {
	v.t.Helper()

	var want []netip.Addr

	for _, h := range v.lab.Nodes {
		if len(names) == 0 || slices.Contains(names, h.Name) {
			if prefix.Addr().Is4() {
				want = append(want, h.IPv4)
			} else {
				want = append(want, h.IPv6)
			}
		}
	}

	slices.SortFunc(want, netip.Addr.Compare)

	if _, err := bgpcheck.WaitNextHops(v.lab, prefix, len(want), 30*time.Second); err != nil {
		out, _ := bird.Cmd("show", "protocols", "all") //nolint:errcheck
		v.t.Fatalf("%v\nBIRD:\n%s", err, out)
	}

	got, err := bgpcheck.NextHops(v.lab, prefix)
	if err != nil || !slices.Equal(got, want) {
		v.t.Fatalf("router route %s: next hops %v, want %v (%v)", prefix, got, want, err)
	}
}

// svcStatus is a ServiceBGPStatus as lbctl prints it.
type svcStatus struct {
	Announced bool     `json:"announced"`
	Reason    string   `json:"reason"`
	Prefix    string   `json:"prefix"`
	Peers     []string `json:"peers"`
	Error     string   `json:"error"`
}

// statuses reads every node's ServiceBGPStatus of id ("<address>/<advertisement>").
func (v *svcBGPLab) statuses(id string) map[string]svcStatus {
	v.t.Helper()

	out := map[string]svcStatus{}

	for _, h := range v.lab.Nodes {
		text, err := v.cluster.Lbctl(v.t.Context(), "-n", h.IPv4.String(), "get", "svcbgp", id, "-o", "json")
		if err != nil {
			v.t.Fatal(err)
		}

		var doc struct {
			Spec svcStatus `json:"spec"`
		}

		if err := json.Unmarshal([]byte(text), &doc); err != nil {
			v.t.Fatalf("decoding %q: %v", text, err)
		}

		out[h.Name] = doc.Spec
	}

	return out
}

// Three agents with no BGP config get a BGP peer and a Service in BGP mode
// from the controller's push (then the controller is gone): the router has
// one next hop per node, for IPv4 and IPv6, with the advertisement's
// communities; TCP through the router reaches the nodes. With
// externalTrafficPolicy: Local and one endpoint, only that node announces
// and the others say why; the push answer lists what each node announces.
func TestServiceBGPECMPAndLocalTrafficPolicy(t *testing.T) {
	v := startSvcBGPLab(t)

	bird, err := v.lab.StartBIRD(t.Context(), lab.DefaultBIRDConfig(v.lab))
	if err != nil {
		t.Fatal(err)
	}

	if _, err := l2check.StartStandIns(t.Context(), v.lab, bgpSvc4.Addr(), bgpSvc6.Addr()); err != nil {
		t.Fatal(err)
	}

	peers := []desired.Peer{
		pushedPeer("router", "10.77.0.1", lab.RouterAS, bgpcheck.NodeASN),
		pushedPeer("router6", "fd77::1", lab.RouterAS, bgpcheck.NodeASN),
	}
	rules := []desired.BGPRule{{Spec: &resourcepb.BgpAdvertisementRule{
		Name: "lab", Communities: []string{"65000:300", "no-export"}, LargeCommunities: []string{"64513:3:4"},
	}}}

	v.push(v.input(peers, rules, service("default/web", "lab", nil, bgpSvc4, bgpSvc6)))
	v.waitHops(bird, bgpSvc4)
	v.waitHops(bird, bgpSvc6)

	out, err := bird.Cmd("show", "route", "all", bgpSvc4.String())
	if err != nil {
		t.Fatal(err)
	}

	for _, want := range []string{"(65000,300)", "(65535,65281)", "(64513, 3, 4)"} {
		if !strings.Contains(out, want) {
			t.Errorf("BIRD route lacks %s:\n%s", want, out)
		}
	}

	seen := map[string]int{}

	for i := 0; i < 60 && len(seen) < 3; i++ {
		name, err := standin.Whoami(t.Context(), v.lab.Client, bgpSvc4.Addr().AsSlice(), 2*time.Second)
		if err != nil {
			t.Fatalf("TCP to %s through the router: %v", bgpSvc4.Addr(), err)
		}

		seen[name]++
	}

	if len(seen) < 2 {
		t.Errorf("60 connections all reached %v: no ECMP spread", seen)
	}

	t.Logf("connections per node: %v", seen)

	if _, err := standin.Whoami(t.Context(), v.lab.Client, bgpSvc6.Addr().AsSlice(), 2*time.Second); err != nil {
		t.Errorf("TCP to %s through the router: %v", bgpSvc6.Addr(), err)
	}

	// Pushed again (a new controller term): every node says it announces both IPs.
	announcing := v.push(v.input(peers, rules, service("default/web", "lab", nil, bgpSvc4, bgpSvc6)))
	for _, h := range v.lab.Nodes {
		if got, want := announcing[h.Name], sortedStrings(bgpSvc4.Addr().String(), bgpSvc6.Addr().String()); !slices.Equal(got, want) {
			t.Errorf("%s announces %v, want %v", h.Name, got, want)
		}
	}

	// externalTrafficPolicy: Local, the only endpoint on node-2.
	start := time.Now()
	v.push(v.input(peers, rules, service("default/web", "lab", []string{"node-2"}, bgpSvc4, bgpSvc6)))
	v.waitHops(bird, bgpSvc4, "node-2")
	v.waitHops(bird, bgpSvc6, "node-2")
	t.Logf("router down to the one node with an endpoint %v after the push started", time.Since(start))

	for name, st := range v.statuses(resources4(bgpSvc4, "lab")) {
		switch {
		case name == "node-2" && (!st.Announced || st.Error != ""):
			t.Errorf("node-2 does not announce: %+v", st)
		case name != "node-2" && (st.Announced || st.Reason != desired.ReasonNoLocalEndpoint):
			t.Errorf("%s: %+v, want the reason %q", name, st, desired.ReasonNoLocalEndpoint)
		}
	}

	if name, err := standin.Whoami(t.Context(), v.lab.Client, bgpSvc4.Addr().AsSlice(), 2*time.Second); err != nil || name != "node-2" {
		t.Errorf("TCP to %s reached %q (%v), want node-2", bgpSvc4.Addr(), name, err)
	}

	table, err := v.cluster.Lbctl(t.Context(), "-n", v.lab.Nodes[0].IPv4.String(), "get", "svcbgp")
	if err != nil {
		t.Fatal(err)
	}

	t.Logf("lbctl get svcbgp on node-1:\n%s", table)

	// The endpoint spreads again: every node is back.
	v.push(v.input(peers, rules, service("default/web", "lab", nil, bgpSvc4, bgpSvc6)))
	v.waitHops(bird, bgpSvc4)
	v.waitHops(bird, bgpSvc6)
}

func resources4(ip netip.Prefix, adv string) string { return ip.Addr().String() + "/" + adv }

// Two routers, each its own BIRD in the router namespace, each bound to its
// own address: tor-a on 10.77.0.1 (eBGP, routes into the kernel's main
// table) and tor-b on 10.77.0.2 (iBGP in the nodes' AS, routes into kernel
// table 100). (One BIRD 2.0.12 with two dynamic protocols on two local
// addresses left the second one idle.)
func birdTorA() string {
	return fmt.Sprintf(`log stderr all;
router id 10.77.0.1;
protocol device {}
protocol kernel { ipv4 { export all; }; merge paths on; }
protocol bgp tor_a {
	local 10.77.0.1 as %d;
	neighbor range 10.77.0.0/24 external;
	dynamic name "a";
	passive on;
	strict bind on;
	ipv4 { import all; export none; };
	error wait time 1, 5;
}
`, lab.RouterAS)
}

const tableB = 100

func birdTorB() string {
	return fmt.Sprintf(`log stderr all;
router id 10.77.0.2;
protocol device {}
protocol kernel { ipv4 { export all; }; kernel table %d; merge paths on; }
protocol bgp tor_b {
	local 10.77.0.2 as %d;
	neighbor range 10.77.0.0/24 internal;
	dynamic name "b";
	passive on;
	strict bind on;
	direct;
	ipv4 { import all; export none; gateway direct; };
	error wait time 1, 5;
}
`, tableB, bgpcheck.NodeASN)
}

// tableHops lists the router's next hops toward prefix in a kernel table.
func tableHops(l *lab.Lab, table int, prefix netip.Prefix) ([]netip.Addr, error) {
	var hops []netip.Addr

	err := l.Router.Do(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()

		routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}

		for _, r := range routes {
			if r.Dst == nil || r.Dst.String() != prefix.String() {
				continue
			}

			if gw, ok := netip.AddrFromSlice(r.Gw); ok {
				hops = append(hops, gw.Unmap())
			}

			for _, nh := range r.MultiPath {
				if gw, ok := netip.AddrFromSlice(nh.Gw); ok {
					hops = append(hops, gw.Unmap())
				}
			}
		}

		return nil
	})

	slices.SortFunc(hops, netip.Addr.Compare)

	return hops, err
}

// waitTableHops waits until the route toward prefix in a kernel table has n next hops.
func (v *svcBGPLab) waitTableHops(bird *lab.BIRD, table int, prefix netip.Prefix, n int) {
	v.t.Helper()

	var (
		last []netip.Addr
		err  error
	)

	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if last, err = tableHops(v.lab, table, prefix); err == nil && len(last) == n {
			return
		}
	}

	out, _ := bird.Cmd("show", "protocols", "all") //nolint:errcheck
	v.t.Fatalf("router table %d route %s: want %d next hops, last %v (%v)\nBIRD:\n%s", table, prefix, n, last, err, out)
}

// The "which peers" filter against two routers: an advertisement limited to
// tor-a is never sent to tor-b, the other advertisement goes to both; moving
// the limit to tor-b withdraws the IP from tor-a and announces it to tor-b;
// local preference reaches the iBGP router. tor-a is eBGP and tor-b iBGP:
// each pushed peer speaks as its own local ASN.
func TestServiceBGPPeersFilter(t *testing.T) {
	v := startSvcBGPLab(t)

	if out, err := v.lab.Router.Run(t.Context(), "ip", "addr", "add", routerSecond.String()+"/24", "dev", "eth0"); err != nil {
		t.Fatalf("second router address: %v\n%s", err, out)
	}

	bird, err := v.lab.StartBIRD(t.Context(), birdTorA())
	if err != nil {
		t.Fatal(err)
	}

	birdB, err := v.lab.StartBIRD(t.Context(), birdTorB())
	if err != nil {
		t.Fatal(err)
	}

	peers := []desired.Peer{
		pushedPeer("tor-a", "10.77.0.1", lab.RouterAS, 64600),
		pushedPeer("tor-b", routerSecond.String(), bgpcheck.NodeASN, bgpcheck.NodeASN),
	}

	rules := func(onlyTo string) []desired.BGPRule {
		return []desired.BGPRule{
			{Pools: onlyPool("everywhere"), Spec: &resourcepb.BgpAdvertisementRule{Name: "everywhere", LocalPref: 250}},
			{Pools: onlyPool("limited"), Spec: &resourcepb.BgpAdvertisementRule{Name: "limited", LocalPref: 300, Peers: []string{onlyTo}}},
		}
	}
	services := []desired.Service{
		service("default/web", "everywhere", nil, bgpSvc4),
		service("default/only-a", "limited", nil, bgpSvcOnlyA),
	}

	v.push(v.input(peers, rules("tor-a"), services...))

	v.waitHops(bird, bgpSvc4)
	v.waitHops(bird, bgpSvcOnlyA)
	v.waitTableHops(birdB, tableB, bgpSvc4, 3)

	// tor-b has had every node's session and their other prefix for a
	// while: the limited one never came.
	if hops, err := tableHops(v.lab, tableB, bgpSvcOnlyA); err != nil || len(hops) > 0 {
		t.Fatalf("tor-b routes %s (limited to tor-a) via %v (%v)", bgpSvcOnlyA, hops, err)
	}

	out, err := birdB.Cmd("show", "route", "all")
	if err != nil {
		t.Fatal(err)
	}

	if strings.Contains(out, bgpSvcOnlyA.String()) {
		t.Errorf("tor-b learned %s:\n%s", bgpSvcOnlyA, out)
	}

	if !strings.Contains(out, "BGP.local_pref: 250") {
		t.Errorf("tor-b (iBGP) lacks local_pref 250:\n%s", out)
	}

	// Each session speaks as its own AS: tor-a sees 64600, tor-b the nodes' AS.
	if out, err := bird.Cmd("show", "route", "all", bgpSvc4.String()); err != nil || !strings.Contains(out, "BGP.as_path: 64600") {
		t.Errorf("tor-a's AS path is not 64600 (%v):\n%s", err, out)
	}

	for name, st := range v.statuses(resources4(bgpSvcOnlyA, "limited")) {
		if !st.Announced || !slices.Equal(st.Peers, []string{"tor-a"}) {
			t.Errorf("%s: %+v", name, st)
		}
	}

	// The limit moves to tor-b: tor-a withdraws, tor-b learns it.
	v.push(v.input(peers, rules("tor-b"), services...))
	v.waitTableHops(birdB, tableB, bgpSvcOnlyA, 3)

	if _, err := bgpcheck.WaitNextHops(v.lab, bgpSvcOnlyA, 0, 10*time.Second); err != nil {
		t.Fatalf("tor-a kept the IP now limited to tor-b: %v", err)
	}

	v.waitHops(bird, bgpSvc4)
	v.waitTableHops(birdB, tableB, bgpSvc4, 3)

	out, err = birdB.Cmd("show", "route", "all", bgpSvcOnlyA.String())
	if err != nil || !strings.Contains(out, "BGP.local_pref: 300") {
		t.Errorf("tor-b's route for %s lacks local_pref 300 (%v):\n%s", bgpSvcOnlyA, err, out)
	}

	peersTable, err := v.cluster.Lbctl(t.Context(), "-n", v.lab.Nodes[0].IPv4.String(), "get", "bgppeers")
	if err != nil || strings.Count(peersTable, "established") != 2 || !strings.Contains(peersTable, "controller") {
		t.Errorf("lbctl get bgppeers: %v\n%s", err, peersTable)
	}

	t.Logf("lbctl get bgppeers on node-1:\n%s", peersTable)
}

// A pushed peer's password travels in the push, lands in a private file on
// each node and protects the session with TCP MD5: the right one
// establishes, a wrong one (pushed later) does not.
func TestServiceBGPPushedPeerPassword(t *testing.T) {
	v := startSvcBGPLab(t)

	bird, err := v.lab.StartBIRD(t.Context(), md5BIRDConfig("s3cret"))
	if err != nil {
		t.Fatal(err)
	}

	withPassword := func(pw string) []desired.Peer {
		p := pushedPeer("router", "10.77.0.1", lab.RouterAS, bgpcheck.NodeASN)
		p.Spec.Password = pw

		return []desired.Peer{p}
	}
	rules := []desired.BGPRule{{Spec: &resourcepb.BgpAdvertisementRule{Name: "lab"}}}
	svc := service("default/web", "lab", nil, bgpSvc4)

	v.push(v.input(withPassword("s3cret"), rules, svc))
	v.waitHops(bird, bgpSvc4)

	v.push(v.input(withPassword("wrong"), rules, svc))

	if _, err := bgpcheck.WaitNextHops(v.lab, bgpSvc4, 0, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	time.Sleep(3 * time.Second)

	if hops, err := bgpcheck.NextHops(v.lab, bgpSvc4); err != nil || len(hops) > 0 {
		t.Fatalf("with a wrong password the nodes must stay out: %v (%v)", hops, err)
	}
}
