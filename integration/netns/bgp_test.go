package netns_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/talos-lb/talos-lb/integration/bgpcheck"
	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
)

type bgpLab struct {
	*vipLab
	bird *lab.BIRD
}

func startBGPLab(t *testing.T, birdConf string, opts bgpcheck.Options) *bgpLab {
	t.Helper()

	l := lab.NewForTest(t, lab.Options{Nodes: 3, Router: true, Client: true, IPv6: true})
	if birdConf == "" {
		birdConf = lab.DefaultBIRDConfig(l)
	}

	bird, err := l.StartBIRD(t.Context(), birdConf)
	if err != nil {
		t.Fatal(err)
	}

	apis, err := standin.StartAll(t.Context(), l.Nodes)
	if err != nil {
		t.Fatal(err)
	}

	v := &vipLab{t: t, lab: l, apis: apis}

	c, err := cluster.Start(t.Context(), l, cluster.ControlPlanes(bgpcheck.Config(opts)))
	if err != nil {
		t.Fatal(err)
	}

	v.cluster = c

	return &bgpLab{vipLab: v, bird: bird}
}

// waitBFDUp waits until BIRD has n BFD sessions up: a crash before that is
// only caught by the hold time.
func (b *bgpLab) waitBFDUp(n int) {
	b.t.Helper()

	deadline := time.Now().Add(20 * time.Second)

	for {
		out, err := b.bird.Cmd("show", "bfd", "sessions")
		if err == nil && strings.Count(out, " Up ") >= n {
			return
		}

		if time.Now().After(deadline) {
			b.t.Fatalf("BFD sessions not up within 20 s:\n%s (%v)", out, err)
		}

		time.Sleep(50 * time.Millisecond)
	}
}

func (b *bgpLab) waitHops(n int) {
	b.t.Helper()

	if _, err := bgpcheck.WaitNextHops(b.lab, bgpcheck.VIP4, n, 30*time.Second); err != nil {
		out, _ := b.bird.Cmd("show", "protocols", "all") //nolint:errcheck
		b.t.Fatalf("%v\nBIRD:\n%s", err, out)
	}
}

// Every healthy control-plane node announces the VIP: the router installs
// an ECMP route over all of them, and follows their API servers' health.
func TestBGPVIPECMPFollowsHealth(t *testing.T) {
	b := startBGPLab(t, "", bgpcheck.Options{BFD: true})
	b.waitHops(3)

	b.apis["node-1"].SetReady(false)
	b.waitHops(2)

	hops, err := bgpcheck.NextHops(b.lab, bgpcheck.VIP4)
	if err != nil {
		t.Fatal(err)
	}

	for _, h := range hops {
		if h == b.node("node-1").IPv4 {
			t.Errorf("router still routes to unhealthy node-1: %v", hops)
		}
	}

	b.apis["node-1"].SetReady(true)
	b.waitHops(3)

	// Connections from a client behind the router reach every node (ECMP spread).
	seen := map[string]int{}

	for i := 0; i < 60 && len(seen) < 3; i++ {
		name, err := standin.Whoami(t.Context(), b.lab.Client, bgpcheck.VIP4.Addr().AsSlice(), 2*time.Second)
		if err != nil {
			t.Fatalf("TCP to the VIP through the router: %v", err)
		}

		seen[name]++
	}

	if len(seen) < 2 {
		t.Errorf("60 connections all reached %v: no ECMP spread", seen)
	}

	t.Logf("connections per node: %v", seen)

	// Communities travel with the route.
	out, err := b.bird.Cmd("show", "route", "all", bgpcheck.VIP4.String())
	if err != nil {
		t.Fatal(err)
	}

	for _, want := range []string{"(65000,100)", "(65535,65281)", "(64513, 1, 2)"} {
		if !strings.Contains(out, want) {
			t.Errorf("BIRD route lacks %s:\n%s", want, out)
		}
	}

	// lbctl shows sessions and routes.
	peers, err := b.cluster.Lbctl(t.Context(), "-n", b.node("node-2").IPv4.String(), "get", "bgppeers")
	if err != nil || !strings.Contains(peers, "established") {
		t.Errorf("lbctl get bgppeers: %v\n%s", err, peers)
	}
}

// SIGTERM sends Cease: the router drops the node at once.
func TestBGPWithdrawOnSIGTERM(t *testing.T) {
	b := startBGPLab(t, "", bgpcheck.Options{})
	b.waitHops(3)

	start := time.Now()

	if err := b.agent("node-2").Proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	at, err := bgpcheck.WaitNextHops(b.lab, bgpcheck.VIP4, 2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	t.Logf("withdrawn %v after SIGTERM", at.Sub(start))

	// The router may drop the node before the agent logs that StopBgp returned.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.agent("node-2").Proc.Log(), "Cease") {
		if time.Now().After(deadline) {
			t.Fatalf("no Cease in the agent's log:\n%s", b.agent("node-2").Proc.Log())
		}

		time.Sleep(20 * time.Millisecond)
	}
}

// A frozen node behind a cut cable is dropped by BFD well before the hold time.
func TestBGPCrashWithdrawnByBFD(t *testing.T) {
	b := startBGPLab(t, "", bgpcheck.Options{BFD: true})
	b.waitHops(3)
	b.waitBFDUp(3)

	h := b.node("node-3")
	if err := b.agent("node-3").Proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	if err := b.lab.SetPortUp(h, false); err != nil {
		t.Fatal(err)
	}

	start := time.Now()

	at, err := bgpcheck.WaitNextHops(b.lab, bgpcheck.VIP4, 2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	t.Logf("frozen node withdrawn after %v (hold time 3 s)", at.Sub(start))

	assertBIRDSaw(t, b, "BFD session down")

	if err := b.agent("node-3").Proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// TCP MD5: the right password establishes, a wrong one does not.
func TestBGPMD5(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")

	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	conf := md5BIRDConfig("s3cret")
	b := startBGPLab(t, conf, bgpcheck.Options{PasswordFile: pwFile})
	b.waitHops(3)

	// A new password on one node only: its session cannot come back.
	if err := os.WriteFile(pwFile+"-wrong", []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	a := b.agent("node-1")
	cfg, err := os.ReadFile(a.Config)
	if err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(a.Config, []byte(strings.ReplaceAll(string(cfg), pwFile, pwFile+"-wrong")), 0o600); err != nil {
		t.Fatal(err)
	}

	b.waitHops(2)
	time.Sleep(3 * time.Second)

	hops, err := bgpcheck.NextHops(b.lab, bgpcheck.VIP4)
	if err != nil || len(hops) != 2 {
		t.Fatalf("with a wrong password node-1 must stay out: %v (%v)", hops, err)
	}
}

func md5BIRDConfig(password string) string {
	return `log stderr all;
router id 10.77.0.1;
protocol device {}
protocol kernel kernel4 { ipv4 { export all; }; merge paths on; }
protocol bgp nodes4 {
	local as 64512;
	neighbor range 10.77.0.0/24 external;
	dynamic name "node";
	passive on;
	password "` + password + `";
	ipv4 { import all; export none; };
	error wait time 1, 5;
}
`
}

// Without BFD the hold time (3 s here) drops a frozen node.
func TestBGPCrashWithdrawnByHoldTime(t *testing.T) {
	b := startBGPLab(t, "", bgpcheck.Options{})
	b.waitHops(3)

	if err := b.agent("node-3").Proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	if err := b.lab.SetPortUp(b.node("node-3"), false); err != nil {
		t.Fatal(err)
	}

	start := time.Now()

	at, err := bgpcheck.WaitNextHops(b.lab, bgpcheck.VIP4, 2, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	t.Logf("frozen node withdrawn after %v (hold time 3 s, no BFD)", at.Sub(start))
	assertBIRDSaw(t, b, "Hold timer expired")

	if err := b.agent("node-3").Proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// assertBIRDSaw checks why BIRD dropped a session.
func assertBIRDSaw(t *testing.T, b *bgpLab, reason string) {
	t.Helper()

	out, err := b.bird.Cmd("show", "protocols", "all")
	if err != nil {
		t.Fatal(err)
	}

	if !strings.Contains(out, reason) {
		t.Errorf("BIRD did not drop the node for %q:\n%s", reason, out)
	}
}

// IPv6: a session to the router's IPv6 address carries the IPv6 VIP; the
// router's IPv6 route has every node as next hop, and follows health.
func TestBGPIPv6(t *testing.T) {
	b := startBGPLab(t, "", bgpcheck.Options{IPv6: true})

	if _, err := bgpcheck.WaitNextHops(b.lab, bgpcheck.VIP6, 3, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	b.apis["node-2"].SetReady(false)

	if _, err := bgpcheck.WaitNextHops(b.lab, bgpcheck.VIP6, 2, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	b.apis["node-2"].SetReady(true)

	if _, err := bgpcheck.WaitNextHops(b.lab, bgpcheck.VIP6, 3, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	if _, err := standin.Whoami(t.Context(), b.lab.Client, bgpcheck.VIP6.Addr().AsSlice(), 2*time.Second); err != nil {
		t.Errorf("TCP over IPv6 to the VIP through the router: %v", err)
	}
}

// iBGP: local preference reaches the router (it is only sent to iBGP peers).
func TestBGPLocalPrefOverIBGP(t *testing.T) {
	conf := `log stderr all;
router id 10.77.0.1;
protocol device {}
protocol kernel kernel4 { ipv4 { export all; }; merge paths on; }
protocol bgp nodes4 {
	local as ` + fmt.Sprint(bgpcheck.NodeASN) + `;
	neighbor range 10.77.0.0/24 internal;
	dynamic name "node";
	passive on;
	direct;
	ipv4 { import all; export none; gateway direct; };
	error wait time 1, 5;
}
`

	b := startBGPLab(t, conf, bgpcheck.Options{IBGP: true, LocalPref: 250})
	b.waitHops(3)

	out, err := b.bird.Cmd("show", "route", "all", bgpcheck.VIP4.String())
	if err != nil {
		t.Fatal(err)
	}

	if !strings.Contains(out, "BGP.local_pref: 250") {
		t.Errorf("BIRD route lacks local_pref 250:\n%s", out)
	}
}

const frrConfig = `frr defaults datacenter
hostname router
log stdout
!
router bgp 64512
 bgp router-id 10.77.0.1
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor NODES peer-group
 neighbor NODES remote-as external
 neighbor NODES bfd
 bgp listen range 10.77.0.0/24 peer-group NODES
 neighbor NODES6 peer-group
 neighbor NODES6 remote-as external
 bgp listen range fd77::/64 peer-group NODES6
 address-family ipv4 unicast
  maximum-paths 8
 exit-address-family
 address-family ipv6 unicast
  neighbor NODES6 activate
  maximum-paths 8
 exit-address-family
!
`

// The same core checks against FRR, the second router implementation:
// ECMP over every node (IPv4 and IPv6), communities, withdraw on SIGTERM.
func TestBGPAgainstFRR(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{Nodes: 3, Router: true, Client: true, IPv6: true})

	frr, err := l.StartFRR(t.Context(), frrConfig)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := standin.StartAll(t.Context(), l.Nodes); err != nil {
		t.Fatal(err)
	}

	c, err := cluster.Start(t.Context(), l, cluster.ControlPlanes(bgpcheck.Config(bgpcheck.Options{BFD: true, IPv6: true})))
	if err != nil {
		t.Fatal(err)
	}

	for _, p := range []netip.Prefix{bgpcheck.VIP4, bgpcheck.VIP6} {
		if _, err := bgpcheck.WaitNextHops(l, p, 3, 30*time.Second); err != nil {
			out, _ := frr.Vtysh(t.Context(), "show bgp summary") //nolint:errcheck
			t.Fatalf("%v\nFRR:\n%s", err, out)
		}
	}

	out, err := frr.Vtysh(t.Context(), "show bgp ipv4 unicast "+bgpcheck.VIP4.String()+" json")
	if err != nil {
		t.Fatal(err)
	}

	for _, want := range []string{"65000:100", "noExport", "64513:1:2"} {
		if !strings.Contains(out, want) {
			t.Errorf("FRR route lacks %s:\n%s", want, out)
		}
	}

	if err := c.Agents[1].Proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	for _, p := range []netip.Prefix{bgpcheck.VIP4, bgpcheck.VIP6} {
		if _, err := bgpcheck.WaitNextHops(l, p, 2, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}
