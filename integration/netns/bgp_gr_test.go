package netns_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/talos-lb/talos-lb/integration/bgpcheck"
	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
	"github.com/talos-lb/talos-lb/integration/vipcheck"
)

// Graceful restart (RFC 4724) against real routers. A SIGKILLed agent still
// has its TCP sessions closed by the kernel, without a Cease: a router that
// knows the node can restart keeps its routes as stale (FRR marks the path,
// BIRD shows the session in graceful restart) for the restart time the node
// announced, and drops a node that did not announce it at once. These tests
// assert what stayed and what went, read from the router's kernel routes;
// the timings are logged. No BFD here: BIRD's plain `bfd on` drops the routes
// of a SIGKILLed agent at once whatever graceful restart says (docs/bgp.md).

// grRestartTime is the restart time the graceful-restart nodes announce.
const grRestartTime = 30 * time.Second

// grConfig is bgpcheck's node config (hold time 3 s; no BFD here) with
// graceful restart on every peer.
func grConfig(t *testing.T, opts bgpcheck.Options, restart time.Duration) string {
	t.Helper()

	const keepalive = "      keepalive: 1s\n"

	base := bgpcheck.Config(opts)
	if !strings.Contains(base, keepalive) {
		t.Fatalf("bgpcheck.Config has no %q line to add gracefulRestart after:\n%s", keepalive, base)
	}

	return strings.ReplaceAll(base, keepalive, fmt.Sprintf("%s      gracefulRestart: {restartTime: %s}\n", keepalive, restart))
}

// route is a next hop toward a VIP in the router's kernel table.
type route struct {
	vip netip.Prefix
	hop netip.Addr
}

func (r route) String() string { return r.vip.String() + " via " + r.hop.String() }

// presence is something a watch samples: whether it is there now.
type presence struct {
	name string
	here func() (bool, error)
}

// hopPresence is a next hop in the router's kernel routes.
func hopPresence(l *lab.Lab, r route) presence {
	return presence{name: r.String() + " in the router's kernel routes", here: func() (bool, error) {
		got, err := bgpcheck.NextHops(l, r.vip)

		return slices.Contains(got, r.hop), err
	}}
}

// watch samples what it watches every few milliseconds and records every
// sample each was missing from (a sample that could not be read counts
// neither way).
type watch struct {
	mu      sync.Mutex
	missing map[string][]time.Time
	samples int
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func startWatch(t *testing.T, what ...presence) *watch {
	t.Helper()

	w := &watch{missing: map[string][]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}

	go func() {
		defer close(w.done)

		for {
			select {
			case <-w.stop:
				return
			default:
			}

			for _, p := range what {
				here, err := p.here()
				now := time.Now()

				if err != nil {
					continue
				}

				w.mu.Lock()
				w.samples++

				if !here {
					w.missing[p.name] = append(w.missing[p.name], now)
				}
				w.mu.Unlock()
			}

			time.Sleep(2 * time.Millisecond)
		}
	}()

	t.Cleanup(w.finish)

	return w
}

func watchHops(t *testing.T, l *lab.Lab, routes ...route) *watch {
	t.Helper()

	what := make([]presence, 0, len(routes))
	for _, r := range routes {
		what = append(what, hopPresence(l, r))
	}

	return startWatch(t, what...)
}

func (w *watch) finish() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

// result stops the watch: the samples each was missing in, and how many samples were taken.
func (w *watch) result() (map[string][]time.Time, int) {
	w.finish()

	w.mu.Lock()
	defer w.mu.Unlock()

	return w.missing, w.samples
}

// startGRAgents starts the lab's agents with bgpcheck's config: node-1 and
// node-2 with graceful restart, node-3 (the control) without.
func startGRAgents(t *testing.T, l *lab.Lab, opts bgpcheck.Options) *cluster.Cluster {
	t.Helper()

	withGR, without := grConfig(t, opts, grRestartTime), bgpcheck.Config(opts)

	c, err := cluster.Start(t.Context(), l, cluster.Options{Node: func(i int, _ *lab.Host) cluster.NodeConfig {
		if i == 2 {
			return cluster.NodeConfig{Role: "controlplane", Extra: without}
		}

		return cluster.NodeConfig{Role: "controlplane", Extra: withGR}
	}})
	if err != nil {
		t.Fatal(err)
	}

	return c
}

type grLab struct {
	*bgpLab
}

// startGRLab: BIRD with graceful restart on; node-1 and node-2 announce
// graceful restart, node-3 (the control) does not.
func startGRLab(t *testing.T) *grLab {
	t.Helper()

	l := lab.NewForTest(t, lab.Options{Nodes: 3, Router: true, Client: true, IPv6: true})

	bird, err := l.StartBIRD(t.Context(), lab.GracefulRestartBIRDConfig(l))
	if err != nil {
		t.Fatal(err)
	}

	apis, err := standin.StartAll(t.Context(), l.Nodes)
	if err != nil {
		t.Fatal(err)
	}

	c := startGRAgents(t, l, bgpcheck.Options{IPv6: true})

	return &grLab{&bgpLab{vipLab: &vipLab{t: t, lab: l, cluster: c, apis: apis}, bird: bird}}
}

// session is BIRD's `show protocols all` block of the dynamic session with
// neighbor (BIRD names sessions in the order nodes connect, so by address).
func (g *grLab) session(neighbor netip.Addr) string {
	g.t.Helper()

	out, err := g.bird.Cmd("show", "protocols", "all")
	if err != nil {
		g.t.Fatal(err)
	}

	for block := range strings.SplitSeq(out, "\n\n") {
		if strings.Contains(block, "Neighbor address: "+neighbor.String()+"\n") {
			return block
		}
	}

	g.t.Fatalf("BIRD has no session with %s:\n%s", neighbor, out)

	return ""
}

// neighborCaps is the "Neighbor capabilities" part of a session block: what the node announced.
func neighborCaps(block string) string {
	_, caps, ok := strings.Cut(block, "Neighbor capabilities\n")
	if !ok {
		return ""
	}

	caps, _, _ = strings.Cut(caps, "Session:")

	return caps
}

// grLines are the lines of BIRD's session block that speak of graceful
// restart: the session's state, then what the node announced.
func grLines(block string) string {
	pick := func(text string, prefixes ...string) []string {
		var out []string

		for line := range strings.SplitSeq(text, "\n") {
			l := strings.Join(strings.Fields(line), " ")
			for _, p := range prefixes {
				if strings.HasPrefix(l, p) {
					out = append(out, l)

					break
				}
			}
		}

		return out
	}

	state, _, _ := strings.Cut(block, "Local capabilities")
	lines := pick(state, "BGP state:", "Neighbor graceful restart", "Restart timer:", "Last error:", "Neighbor GR:")

	if caps := neighborCaps(block); caps != "" {
		lines = append(lines, "node announced: "+strings.Join(pick(caps, "Graceful restart", "Restart time:", "Restart recovery", "AF supported:", "AF preserved:"), ", "))
	}

	return strings.Join(lines, " | ")
}

// waitSession polls the session block until ok says yes.
func (g *grLab) waitSession(neighbor netip.Addr, timeout time.Duration, what string, ok func(block string) bool) (string, time.Time) {
	g.t.Helper()

	deadline := time.Now().Add(timeout)

	for {
		block := g.session(neighbor)
		if ok(block) {
			return block, time.Now()
		}

		if time.Now().After(deadline) {
			g.t.Fatalf("BIRD session with %s: not %s within %s:\n%s", neighbor, what, timeout, block)
		}

		time.Sleep(20 * time.Millisecond)
	}
}

// routes are a node's next hops toward both VIPs.
func routes(h *lab.Host) []route {
	return []route{{bgpcheck.VIP4, h.IPv4}, {bgpcheck.VIP6, h.IPv6}}
}

func hasHop(t *testing.T, l *lab.Lab, r route) bool {
	t.Helper()

	hops, err := bgpcheck.NextHops(l, r.vip)
	if err != nil {
		t.Fatal(err)
	}

	return slices.Contains(hops, r.hop)
}

// waitGone waits until the router's kernel routes have none of rs' next hops.
func waitGone(t *testing.T, l *lab.Lab, timeout time.Duration, rs ...route) (time.Time, bool) {
	t.Helper()

	deadline := time.Now().Add(timeout)

	for time.Now().Before(deadline) {
		if !slices.ContainsFunc(rs, func(r route) bool { return hasHop(t, l, r) }) {
			return time.Now(), true
		}

		time.Sleep(5 * time.Millisecond)
	}

	return time.Time{}, false
}

// kill SIGKILLs a node's agent (no Cease; the kernel closes its TCP
// sessions), waits until it is gone, and says when the signal was sent.
func (g *grLab) kill(name string) time.Time {
	g.t.Helper()

	a := g.agent(name)
	sent := time.Now()

	if err := a.Proc.Signal(syscall.SIGKILL); err != nil {
		g.t.Fatal(err)
	}

	<-a.Proc.Done()

	return sent
}

// inGR says BIRD keeps the session's routes as stale, waiting for the node.
func inGR(block string) bool {
	return strings.Contains(block, "Neighbor graceful restart active")
}

// With graceful restart on both sides, a SIGKILLed agent's next hops (IPv4
// and IPv6 sessions) stay in the router's kernel routes while the agent is
// down; an agent restarted within the restart time refreshes them without
// them ever leaving. Without graceful restart (the control node) they go at
// once. An agent that does not come back is dropped when the restart time
// runs out.
func TestBGPGracefulRestartKeepsNextHopOverAgentRestart(t *testing.T) {
	g := startGRLab(t)
	g.waitHops(3)

	if _, err := bgpcheck.WaitNextHops(g.lab, bgpcheck.VIP6, 3, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	node1, node2, node3 := g.node("node-1"), g.node("node-2"), g.node("node-3")

	// (a) Negotiated: node-1 and node-2 announce graceful restart with the
	// restart time and their session's family, forwarding state preserved; node-3 does not.
	for _, h := range []*lab.Host{node1, node2} {
		for _, r := range routes(h) {
			af := map[bool]string{true: "ipv6", false: "ipv4"}[r.hop.Is6()]

			block := g.session(r.hop)
			caps := neighborCaps(block)

			for _, want := range []string{"Graceful restart\n", fmt.Sprintf("Restart time: %d\n", int(grRestartTime.Seconds())), "AF supported: " + af + "\n", "AF preserved: " + af + "\n"} {
				if !strings.Contains(caps, want) {
					t.Errorf("BIRD: %s did not announce %q:\n%s", r.hop, strings.TrimSpace(want), block)
				}
			}

			t.Logf("BIRD session with %s %s: %s", h.Name, r.hop, grLines(block))
		}
	}

	for _, r := range routes(node3) {
		if block := g.session(r.hop); strings.Contains(neighborCaps(block), "Graceful restart") {
			t.Errorf("BIRD: control node-3 %s announced graceful restart:\n%s", r.hop, block)
		} else {
			t.Logf("BIRD session with control node-3 %s: %s", r.hop, grLines(block))
		}
	}

	// (b) Control: without graceful restart, a SIGKILLed agent's next hops go at once.
	killed := g.kill("node-3")

	at, ok := waitGone(t, g.lab, 10*time.Second, routes(node3)...)
	if !ok {
		t.Fatalf("control node-3 (no graceful restart) SIGKILLed: the router kept a next hop via it for 10 s:\n%s", g.session(node3.IPv4))
	}

	t.Logf("control node-3 SIGKILLed: next hops gone after %v; BIRD: %s", at.Sub(killed).Round(time.Millisecond), grLines(g.session(node3.IPv4)))

	// (c) Graceful restart: node-2's next hops stay while its agent is down
	// (its TCP sessions are closed, BIRD keeps the routes as stale) and
	// through the restart, which refreshes them.
	// And the VIPs on node-2's lo, which the restarted agent must not drop
	// while the router keeps sending their traffic there.
	what := make([]presence, 0, 4)
	for _, r := range routes(node2) {
		what = append(what, hopPresence(g.lab, r), presence{name: r.vip.Addr().String() + " on node-2's lo", here: func() (bool, error) {
			return vipcheck.HasAddressOn(node2, "lo", r.vip.Addr())
		}})
	}

	watch := startWatch(t, what...)
	killed = g.kill("node-2")

	for _, r := range routes(node2) {
		block, _ := g.waitSession(r.hop, 10*time.Second, "in graceful restart", inGR)
		t.Logf("node-2 SIGKILLed; BIRD session with %s: %s", r.hop, grLines(block))
	}

	// Three hold times (3 s) with the agent dead: the sessions are long gone, the next hops are not.
	time.Sleep(9 * time.Second)

	for _, r := range routes(node2) {
		if !hasHop(t, g.lab, r) {
			t.Fatalf("node-2 announced graceful restart, yet 9 s after SIGKILL the router has no route %s:\n%s", r, g.session(r.hop))
		}

		block := g.session(r.hop)
		if !inGR(block) {
			t.Errorf("node-2's session with %s is not in graceful restart 9 s after SIGKILL:\n%s", r.hop, block)
		}

		t.Logf("node-2 9 s after SIGKILL, %s still in the kernel; BIRD: %s", r, grLines(block))
	}

	if err := g.cluster.Restart(t.Context(), g.agent("node-2")); err != nil {
		t.Fatal(err)
	}

	restarted := time.Now()

	// Back: established, the node said it restarted with forwarding state
	// kept, and its End-of-RIB ended graceful restart (stale routes refreshed).
	var back time.Time

	for _, r := range routes(node2) {
		block, at := g.waitSession(r.hop, grRestartTime, "re-established with graceful restart over", func(b string) bool {
			return strings.Contains(b, "BGP state:          Established") && !inGR(b) && !strings.Contains(b, "Neighbor GR:")
		})

		if at.Sub(killed) >= grRestartTime {
			t.Fatalf("node-2's session with %s came back %v after SIGKILL, past its restart time %v: this run proves nothing", r.hop, at.Sub(killed), grRestartTime)
		}

		af := map[bool]string{true: "ipv6", false: "ipv4"}[r.hop.Is6()]

		for _, want := range []string{"Restart recovery\n", "AF preserved: " + af + "\n"} {
			if !strings.Contains(neighborCaps(block), want) {
				t.Errorf("restarted node-2 did not announce %q to %s:\n%s", strings.TrimSpace(want), r.hop, block)
			}
		}

		if at.After(back) {
			back = at
		}

		t.Logf("node-2's session with %s back; BIRD: %s", r.hop, grLines(block))
	}

	// Watch a little longer: stale routes the End-of-RIB did not refresh would go now.
	time.Sleep(2 * time.Second)

	missing, samples := watch.result()
	for what, m := range missing {
		t.Errorf("%s was missing in %d of %d samples, first %v and last %v after SIGKILL",
			what, len(m), samples, m[0].Sub(killed).Round(time.Millisecond), m[len(m)-1].Sub(killed).Round(time.Millisecond))
	}

	t.Logf("node-2 restarted %v after SIGKILL, sessions back after %v; its next hops were there in all %d samples",
		restarted.Sub(killed).Round(time.Millisecond), back.Sub(killed).Round(time.Millisecond), samples)

	// (d) An agent that does not come back: its next hops stay past the hold
	// time, then go when the restart time runs out.
	killed = g.kill("node-1")

	time.Sleep(9 * time.Second)

	for _, r := range routes(node1) {
		if !hasHop(t, g.lab, r) {
			t.Fatalf("node-1 announced graceful restart, yet 9 s after SIGKILL the router has no route %s:\n%s", r, g.session(r.hop))
		}
	}

	at, ok = waitGone(t, g.lab, grRestartTime+30*time.Second, routes(node1)...)
	if !ok {
		t.Fatalf("node-1 stayed down, yet the router kept a next hop via it %v after SIGKILL (restart time %v):\n%s",
			time.Since(killed).Round(time.Second), grRestartTime, g.session(node1.IPv4))
	}

	t.Logf("node-1 SIGKILLed and left down: next hops gone after %v (restart time %v); BIRD: %s",
		at.Sub(killed).Round(time.Millisecond), grRestartTime, grLines(g.session(node1.IPv4)))

	for _, r := range routes(node2) {
		if hops, err := bgpcheck.NextHops(g.lab, r.vip); err != nil || len(hops) != 1 || hops[0] != r.hop {
			t.Errorf("router's next hops toward %s at the end: %v (%v), want only node-2's %s", r.vip, hops, err, r.hop)
		}
	}
}

// frrGRConfig is FRR with graceful restart (restarting and helper) for the
// nodes of the IPv4 segment, dynamic neighbours, ECMP, no BFD.
const frrGRConfig = `frr defaults datacenter
hostname router
log stdout
!
router bgp 64512
 bgp router-id 10.77.0.1
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 bgp graceful-restart
 neighbor NODES peer-group
 neighbor NODES remote-as external
 bgp listen range 10.77.0.0/24 peer-group NODES
 address-family ipv4 unicast
  maximum-paths 8
 exit-address-family
!
`

// frrNeighbor is the part of `show bgp neighbors ADDR json` about graceful restart.
type frrNeighbor struct {
	State        string `json:"bgpState"`
	StateIs      string `json:"bgpStateIs"`
	LastResetDue string `json:"lastResetDueTo"`
	Caps         struct {
		GracefulRestart string      `json:"gracefulRestart"`
		RemoteTimerMs   int         `json:"gracefulRestartRemoteTimerMsecs"`
		Families        frrFamilies `json:"addressFamiliesByPeer"`
	} `json:"neighborCapabilities"`
	GR struct {
		EndOfRibRecv map[string]bool `json:"endOfRibRecv"`
		RemoteMode   string          `json:"remoteGrMode"`
		RBit         bool            `json:"rBit"`
	} `json:"gracefulRestartInfo"`
}

// frrFamilies are the families a node's graceful restart capability lists
// and whether it kept their forwarding state; FRR writes "none" for none.
type frrFamilies map[string]bool

func (f *frrFamilies) UnmarshalJSON(b []byte) error {
	var m map[string]struct {
		Preserved bool `json:"preserved"`
	}

	if err := json.Unmarshal(b, &m); err != nil {
		var none string
		if json.Unmarshal(b, &none) == nil {
			return nil
		}

		return err
	}

	*f = frrFamilies{}
	for af, v := range m {
		(*f)[af] = v.Preserved
	}

	return nil
}

func (n frrNeighbor) String() string {
	state := n.State
	if n.State != "Established" {
		state = fmt.Sprintf("%s (%s, last reset: %s)", n.State, n.StateIs, n.LastResetDue)
	}

	return fmt.Sprintf("bgpState %s, gracefulRestart %q, remote timer %d ms, families %v, remoteGrMode %q, rBit %v, endOfRibRecv %v",
		state, n.Caps.GracefulRestart, n.Caps.RemoteTimerMs, n.Caps.Families, n.GR.RemoteMode, n.GR.RBit, n.GR.EndOfRibRecv)
}

// frrPath is one path of `show bgp ipv4 unicast PREFIX json`.
type frrPath struct {
	Stale     bool `json:"stale"`
	Remaining int  `json:"gracefulRestartSecondsRemaining"`
	Peer      struct {
		ID string `json:"peerId"`
	} `json:"peer"`
}

type frrLab struct {
	t   *testing.T
	frr *lab.FRR
}

func (f frrLab) json(cmd string, v any) {
	f.t.Helper()

	out, err := f.frr.Vtysh(f.t.Context(), cmd)
	if err != nil {
		f.t.Fatalf("vtysh %s: %v\n%s", cmd, err, out)
	}

	if err := json.Unmarshal([]byte(out), v); err != nil {
		f.t.Fatalf("vtysh %s: %v\n%s", cmd, err, out)
	}
}

func (f frrLab) neighbor(a netip.Addr) frrNeighbor {
	f.t.Helper()

	var m map[string]frrNeighbor

	f.json("show bgp neighbors "+a.String()+" json", &m)

	return m[a.String()]
}

// path is the VIP's path learned from node a, if FRR has one.
func (f frrLab) path(a netip.Addr) (frrPath, bool) {
	f.t.Helper()

	var r struct {
		Paths []frrPath `json:"paths"`
	}

	f.json("show bgp ipv4 unicast "+bgpcheck.VIP4.String()+" json", &r)

	for _, p := range r.Paths {
		if p.Peer.ID == a.String() {
			return p, true
		}
	}

	return frrPath{}, false
}

func (f frrLab) wait(timeout time.Duration, what string, ok func() bool) time.Time {
	f.t.Helper()

	deadline := time.Now().Add(timeout)

	for !ok() {
		if time.Now().After(deadline) {
			f.t.Fatalf("FRR: not %s within %v", what, timeout)
		}

		time.Sleep(20 * time.Millisecond)
	}

	return time.Now()
}

// The same against FRR (bgpd 8.4 with `bgp graceful-restart`, dynamic
// neighbours): graceful restart negotiated with the family preserved, the
// SIGKILLed agent's path kept and marked stale, refreshed by the restarted
// agent without its next hop ever leaving the kernel; the control node
// without graceful restart dropped at once.
func TestBGPGracefulRestartAgainstFRR(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{Nodes: 3, Router: true, Client: true})

	fr, err := l.StartFRR(t.Context(), frrGRConfig)
	if err != nil {
		t.Fatal(err)
	}

	f := frrLab{t: t, frr: fr}

	if _, err := standin.StartAll(t.Context(), l.Nodes); err != nil {
		t.Fatal(err)
	}

	c := startGRAgents(t, l, bgpcheck.Options{})

	if _, err := bgpcheck.WaitNextHops(l, bgpcheck.VIP4, 3, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	n1, n2, n3 := l.Nodes[0].IPv4, l.Nodes[1].IPv4, l.Nodes[2].IPv4

	for _, a := range []netip.Addr{n1, n2} {
		n := f.neighbor(a)
		if n.Caps.GracefulRestart != "advertisedAndReceived" || n.Caps.RemoteTimerMs != int(grRestartTime.Milliseconds()) || !n.Caps.Families["ipv4Unicast"] {
			t.Errorf("FRR: graceful restart with %s not negotiated as announced: %v", a, n)
		}

		t.Logf("FRR neighbor %s: %v", a, n)
	}

	if n := f.neighbor(n3); n.Caps.GracefulRestart == "advertisedAndReceived" {
		t.Errorf("FRR: control %s announced graceful restart: %v", n3, n)
	} else {
		t.Logf("FRR neighbor control %s: %v", n3, n)
	}

	// Control: no graceful restart, gone at once.
	killed := time.Now()

	if err := c.Agents[2].Proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	at, ok := waitGone(t, l, 10*time.Second, route{bgpcheck.VIP4, n3})
	if !ok {
		t.Fatalf("FRR kept control node-3's next hop 10 s after SIGKILL")
	}

	t.Logf("control node-3 SIGKILLed: next hop gone after %v", at.Sub(killed).Round(time.Millisecond))

	// Graceful restart: kept, marked stale, refreshed by the restarted agent.
	watch := watchHops(t, l, route{bgpcheck.VIP4, n2})
	killed = time.Now()

	if err := c.Agents[1].Proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	<-c.Agents[1].Proc.Done()

	f.wait(10*time.Second, "keeping node-2's path as stale", func() bool {
		p, ok := f.path(n2)

		return ok && p.Stale
	})

	time.Sleep(time.Until(killed.Add(9 * time.Second)))

	p, ok := f.path(n2)
	if !ok || !p.Stale || !hasHop(t, l, route{bgpcheck.VIP4, n2}) {
		t.Fatalf("FRR 9 s after node-2's SIGKILL: path %+v (present %v), want it stale and its next hop in the kernel; neighbor: %v", p, ok, f.neighbor(n2))
	}

	t.Logf("FRR 9 s after node-2's SIGKILL: path stale %v, %d s of graceful restart left; neighbor: %v", p.Stale, p.Remaining, f.neighbor(n2))

	if err := c.Restart(t.Context(), c.Agents[1]); err != nil {
		t.Fatal(err)
	}

	restarted := time.Now()

	back := f.wait(grRestartTime, "refreshing node-2's path", func() bool {
		n := f.neighbor(n2)
		p, ok := f.path(n2)

		return n.State == "Established" && n.GR.EndOfRibRecv["ipv4Unicast"] && ok && !p.Stale
	})
	if back.Sub(killed) >= grRestartTime {
		t.Fatalf("node-2 came back %v after SIGKILL, past its restart time: this run proves nothing", back.Sub(killed))
	}

	time.Sleep(2 * time.Second)

	missing, samples := watch.result()
	for what, m := range missing {
		t.Errorf("%s was missing in %d of %d samples, first %v after SIGKILL", what, len(m), samples, m[0].Sub(killed).Round(time.Millisecond))
	}

	t.Logf("node-2 restarted %v after SIGKILL, path refreshed (not stale) after %v; its next hop was there in all %d samples; neighbor: %v",
		restarted.Sub(killed).Round(time.Millisecond), back.Sub(killed).Round(time.Millisecond), samples, f.neighbor(n2))
}
