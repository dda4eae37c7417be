package l2svc_test

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/agent/l2svc"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/rank"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// fakeResponder remembers what it was told to answer.
type fakeResponder struct {
	mu          sync.Mutex
	want        map[netip.Addr][]string
	fail        map[netip.Addr]error
	reannounced int
}

func (f *fakeResponder) Reannounce() {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.reannounced++
}

func (f *fakeResponder) reannounces() int {
	f.mu.Lock()
	defer f.mu.Unlock()

	return f.reannounced
}

func (f *fakeResponder) Set(want map[netip.Addr][]string) map[netip.Addr]error {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.want = maps.Clone(want)

	return maps.Clone(f.fail)
}

func (f *fakeResponder) answered() map[netip.Addr][]string {
	f.mu.Lock()
	defer f.mu.Unlock()

	return maps.Clone(f.want)
}

type fakeInterfaces []l2svc.Interface

func (f fakeInterfaces) List() ([]l2svc.Interface, error) { return f, nil }

var lan = fakeInterfaces{
	{Name: "lo", Up: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
	{Name: "eth0", Up: true, Ethernet: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.5.0.2/24"), netip.MustParsePrefix("fd05::2/64")}},
	{Name: "eth1", Up: true, Ethernet: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.9.2/24")}},
	{Name: "eth2", Up: false, Ethernet: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.5.0.3/24")}},
}

var nodes = []string{"node-a", "node-b", "node-c"}

type env struct {
	*ctest.Harness
	resp *fakeResponder
}

func start(t *testing.T, self string, tune func(*l2svc.OwnershipController)) *env {
	t.Helper()

	resp := &fakeResponder{}
	ctrl := &l2svc.OwnershipController{NodeName: self, Responder: resp, Interfaces: lan}

	if tune != nil {
		tune(ctrl)
	}

	return &env{Harness: ctest.New(t, ctrl), resp: resp}
}

func serviceIP(address, set string, ifaces ...string) *resources.ServiceIP {
	r := resources.NewServiceIP(address)
	r.TypedSpec().Value = &resourcepb.ServiceIPSpec{
		Address:  address,
		Services: []string{"default/web"},
		L2:       &resourcepb.L2Announcement{NodeSet: set, Interfaces: ifaces},
	}

	return r
}

func nodeSet(name string, members []string, excluded map[string]string) *resources.NodeSet {
	r := resources.NewNodeSet(name)
	r.TypedSpec().Value = &resourcepb.NodeSet{Name: name, Nodes: members, Excluded: excluded, DefaultReason: "not selected by advertisement"}

	return r
}

func member(node, state string) *resources.Member {
	r := resources.NewMember(node)
	r.TypedSpec().Value = &resourcepb.MemberSpec{Address: node + ":7946", State: state}

	return r
}

func (e *env) members(states map[string]string) {
	for n, s := range states {
		e.Create(member(n, s))
	}
}

// ipOwnedBy finds an address of 10.5.0.0/24 whose best-ranked node is owner
// and whose second is second ("" for any).
func ipOwnedBy(t *testing.T, owner, second string) string {
	t.Helper()

	for i := 100; i < 250; i++ {
		ip := fmt.Sprintf("10.5.0.%d", i)
		order := rank.Order(ip, nodes)

		if order[0] == owner && (second == "" || order[1] == second) {
			return ip
		}
	}

	t.Fatalf("no address ranked %s then %s", owner, second)

	return ""
}

func (e *env) assertOwnership(ip string, check func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions)) {
	e.T.Helper()
	ctest.AssertResource(e.Harness, ip, func(r *resources.L2Ownership, a *assert.Assertions) {
		check(r.TypedSpec().Value, a)
	})
}

func (e *env) assertAnswered(want map[string][]string) {
	e.T.Helper()

	require.EventuallyWithT(e.T, func(c *assert.CollectT) {
		got := map[string][]string{}
		for ip, ifaces := range e.resp.answered() {
			got[ip.String()] = ifaces
		}

		assert.Equal(c, want, got)
	}, 5*time.Second, 10*time.Millisecond)
}

// Every node computes the same owner: the best ranked of the node set.
func TestRankingHonoured(t *testing.T) {
	e := start(t, "node-a", nil)
	e.members(map[string]string{"node-a": "alive", "node-b": "alive", "node-c": "alive"})
	e.Create(nodeSet("all", nodes, nil))

	mine := ipOwnedBy(t, "node-a", "")
	theirs := ipOwnedBy(t, "node-b", "")

	e.Create(serviceIP(mine, "all"))
	e.Create(serviceIP(theirs, "all"))

	e.assertOwnership(mine, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.True(s.GetOwned())
		a.Equal("node-a", s.GetOwner())
		a.Empty(s.GetReason())
		a.Equal([]string{"eth0"}, s.GetInterfaces())
		a.Equal(l2svc.LivenessGossip, s.GetLiveness())
		a.Equal(rank.Order(mine, nodes), s.GetRanking())
		a.Equal([]string{"default/web"}, s.GetServices())
		a.NotNil(s.GetSince())
	})
	e.assertOwnership(theirs, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.False(s.GetOwned())
		a.Equal("node-b", s.GetOwner())
		a.Equal("not best ranked: node-b", s.GetReason())
	})
	e.assertAnswered(map[string][]string{mine: {"eth0"}})

	// A non-L2 service IP gets no L2Ownership.
	bgpOnly := resources.NewServiceIP("10.5.0.99")
	bgpOnly.TypedSpec().Value = &resourcepb.ServiceIPSpec{Address: "10.5.0.99", Bgp: []*resourcepb.BgpAnnouncement{{Advertisement: "x", NodeSet: "all"}}}
	e.Create(bgpOnly)
	ctest.AssertNoResource[*resources.L2Ownership](e.Harness, "10.5.0.99")
}

// The owner dies: the next in rank takes over; it comes back: it takes over again.
func TestDeadOwnerReplaced(t *testing.T) {
	e := start(t, "node-a", nil)
	e.members(map[string]string{"node-a": "alive", "node-b": "alive", "node-c": "alive"})
	e.Create(nodeSet("all", nodes, nil))

	ip := ipOwnedBy(t, "node-b", "node-a")
	e.Create(serviceIP(ip, "all"))

	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.Equal("not best ranked: node-b", s.GetReason())
	})
	e.assertAnswered(map[string][]string{})

	e.Update(member("node-b", "dead"))
	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.True(s.GetOwned())
		a.Equal("node-a", s.GetOwner())
		a.NotContains(s.GetRanking(), "node-b")
	})
	e.assertAnswered(map[string][]string{ip: {"eth0"}})

	e.Update(member("node-b", "alive"))
	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.False(s.GetOwned())
		a.Equal("node-b", s.GetOwner())
	})
	e.assertAnswered(map[string][]string{})

	// Left (a graceful stop) counts as dead.
	e.Update(member("node-b", "left"))
	e.assertAnswered(map[string][]string{ip: {"eth0"}})
}

// A suspect owner keeps its IPs: only dead moves them.
func TestSuspectStaysOwner(t *testing.T) {
	e := start(t, "node-a", nil)
	e.members(map[string]string{"node-a": "alive", "node-b": "suspect", "node-c": "alive"})
	e.Create(nodeSet("all", nodes, nil))

	ip := ipOwnedBy(t, "node-b", "node-a")
	e.Create(serviceIP(ip, "all"))

	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.False(s.GetOwned())
		a.Equal("node-b", s.GetOwner())
		a.Equal("not best ranked: node-b", s.GetReason())
	})

	e.Update(member("node-b", "dead"))
	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.True(s.GetOwned())
	})
}

// A node outside the set says why, with the controller's reason.
func TestExcludedReasons(t *testing.T) {
	e := start(t, "node-a", nil)
	e.members(map[string]string{"node-a": "alive", "node-b": "alive", "node-c": "alive"})
	e.Create(nodeSet("local", []string{"node-b"}, map[string]string{"node-a": "no local endpoints"}))
	e.Create(nodeSet("workers", []string{"node-b", "node-c"}, map[string]string{
		"node-a": "excluded by label node.kubernetes.io/exclude-from-external-load-balancers",
	}))
	e.Create(nodeSet("picky", []string{"node-c"}, nil))

	e.Create(serviceIP("10.5.0.10", "local"))
	e.Create(serviceIP("10.5.0.11", "workers"))
	e.Create(serviceIP("10.5.0.12", "picky"))
	e.Create(serviceIP("10.5.0.13", "missing"))

	e.assertOwnership("10.5.0.10", func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.False(s.GetOwned())
		a.Equal("no local endpoints", s.GetReason())
		a.Equal("node-b", s.GetOwner())
	})
	e.assertOwnership("10.5.0.11", func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.Equal("excluded by label node.kubernetes.io/exclude-from-external-load-balancers", s.GetReason())
		a.Equal(rank.Order("10.5.0.11", []string{"node-b", "node-c"})[0], s.GetOwner())
	})
	e.assertOwnership("10.5.0.12", func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.Equal("not selected by advertisement", s.GetReason())
		a.Equal("node-c", s.GetOwner())
	})
	e.assertOwnership("10.5.0.13", func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.Equal(`node set "missing" not pushed`, s.GetReason())
		a.Empty(s.GetOwner())
	})
	e.assertAnswered(map[string][]string{})
}

// The controller's push changes who is eligible (endpoints moved): ownership follows.
func TestEligibilityChangeMovesOwnership(t *testing.T) {
	e := start(t, "node-a", nil)
	e.members(map[string]string{"node-a": "alive", "node-b": "alive", "node-c": "alive"})

	ip := ipOwnedBy(t, "node-b", "node-a")

	e.Create(nodeSet("svc", []string{"node-b"}, map[string]string{"node-a": "no local endpoints", "node-c": "no local endpoints"}))
	e.Create(serviceIP(ip, "svc"))
	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.Equal("no local endpoints", s.GetReason())
	})

	// Endpoints move from node-b to node-a.
	e.Update(nodeSet("svc", []string{"node-a"}, map[string]string{"node-b": "no local endpoints", "node-c": "no local endpoints"}))
	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.True(s.GetOwned())
		a.Equal("node-a", s.GetOwner())
	})
	e.assertAnswered(map[string][]string{ip: {"eth0"}})

	// The IP moves to another node set (another push): node-a loses it at once.
	e.Create(nodeSet("other", []string{"node-b", "node-c"}, nil))
	e.Update(serviceIP(ip, "other"))
	e.assertAnswered(map[string][]string{})

	// The service IP is withdrawn: its status goes.
	require.NoError(t, e.State.Destroy(e.Ctx(), resources.NewServiceIP(ip).Metadata()))
	ctest.AssertNoResource[*resources.L2Ownership](e.Harness, ip)
}

// Without gossip every eligible node counts as live: the best ranked
// answers, the others do not, and nobody takes over.
func TestNoGossip(t *testing.T) {
	e := start(t, "node-a", nil)
	e.Create(nodeSet("all", nodes, nil))

	mine := ipOwnedBy(t, "node-a", "")
	theirs := ipOwnedBy(t, "node-c", "")

	e.Create(serviceIP(mine, "all"))
	e.Create(serviceIP(theirs, "all"))

	e.assertOwnership(mine, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.True(s.GetOwned())
		a.Equal(l2svc.LivenessNone, s.GetLiveness())
	})
	e.assertOwnership(theirs, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.False(s.GetOwned())
		a.Equal("not best ranked: node-c", s.GetReason())
		a.Equal(l2svc.LivenessNone, s.GetLiveness())
	})
	e.assertAnswered(map[string][]string{mine: {"eth0"}})
}

// When gossip starts, nodes it has not shown yet still count as live for a
// grace period, so a starting agent does not grab their IPs; afterwards they
// count as gone.
func TestUnseenNodesAfterGrace(t *testing.T) {
	e := start(t, "node-a", func(c *l2svc.OwnershipController) { c.StartupGrace = 500 * time.Millisecond })
	e.Create(nodeSet("all", nodes, nil))

	ip := ipOwnedBy(t, "node-b", "node-a")
	e.Create(serviceIP(ip, "all"))

	e.members(map[string]string{"node-a": "alive"})
	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.Equal(l2svc.LivenessGossip, s.GetLiveness())
		a.Equal("not best ranked: node-b", s.GetReason())
	})

	start := time.Now()

	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.True(s.GetOwned())
		a.Equal([]string{"node-a"}, s.GetRanking())
	})
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "took over before the grace ended")

	// node-b shows up alive: it takes its IP back.
	e.members(map[string]string{"node-b": "alive"})
	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.False(s.GetOwned())
		a.Equal("node-b", s.GetOwner())
	})
}

// This node left the gossip, or the agent stops: it lets go of everything.
func TestSelfNotLiveAndShutdown(t *testing.T) {
	e := start(t, "node-a", nil)
	e.members(map[string]string{"node-a": "alive", "node-b": "alive", "node-c": "alive"})
	e.Create(nodeSet("all", nodes, nil))

	ip := ipOwnedBy(t, "node-a", "")
	e.Create(serviceIP(ip, "all"))
	e.assertAnswered(map[string][]string{ip: {"eth0"}})

	e.Update(member("node-a", "left"))
	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.False(s.GetOwned())
		a.Equal("not live (left)", s.GetReason())
		a.NotEqual("node-a", s.GetOwner())
	})
	e.assertAnswered(map[string][]string{})

	e.Update(member("node-a", "alive"))
	e.assertAnswered(map[string][]string{ip: {"eth0"}})

	lc := resources.NewAgentLifecycle()
	lc.TypedSpec().Value.ShuttingDown = true
	e.Create(lc)
	e.assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.False(s.GetOwned())
		a.Equal("agent shutting down", s.GetReason())
	})
	e.assertAnswered(map[string][]string{})
}

// Interfaces: the pushed ones (checked), else those whose subnet holds the IP, per family.
func TestInterfaces(t *testing.T) {
	e := start(t, "node-a", nil)
	e.Create(nodeSet("solo", []string{"node-a"}, nil))

	e.Create(serviceIP("192.168.9.50", "solo"))
	e.Create(serviceIP("fd05::50", "solo"))
	e.Create(serviceIP("10.5.0.50", "solo", "eth1", "eth2", "wlan0"))
	e.Create(serviceIP("172.16.0.50", "solo"))

	e.assertOwnership("10.5.0.50", func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.True(s.GetOwned())
		a.Equal([]string{"eth1"}, s.GetInterfaces())
		a.Equal("interfaces eth2: down, wlan0: no such interface", s.GetError())
	})
	e.assertOwnership("172.16.0.50", func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.True(s.GetOwned())
		a.Empty(s.GetInterfaces())
		a.Contains(s.GetError(), "no up interface has a subnet holding 172.16.0.50")
	})
	e.assertAnswered(map[string][]string{
		"192.168.9.50": {"eth1"},
		"fd05::50":     {"eth0"},
		"10.5.0.50":    {"eth1"},
	})

	// The announcer lists what is answered.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got := l2svc.Announcer{State: e.State}.Announcing()
		assert.Equal(c, []string{"10.5.0.50", "192.168.9.50", "fd05::50"}, got)
	}, 5*time.Second, 10*time.Millisecond)
}

// A responder failure shows in the status.
func TestResponderErrorShown(t *testing.T) {
	e := start(t, "node-a", nil)
	e.resp.fail = map[netip.Addr]error{netip.MustParseAddr("10.5.0.60"): fmt.Errorf("eth0: ARP: operation not permitted")}

	e.Create(nodeSet("solo", []string{"node-a"}, nil))
	e.Create(serviceIP("10.5.0.60", "solo"))

	e.assertOwnership("10.5.0.60", func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
		a.True(s.GetOwned())
		a.Equal("eth0: ARP: operation not permitted", s.GetError())
	})
}

// Every node of a cluster, each with its own controller and the same inputs,
// names the same owner, and exactly one owns each IP.
func TestOneOwnerAcrossNodes(t *testing.T) {
	envs := map[string]*env{}

	for _, n := range nodes {
		envs[n] = start(t, n, nil)
		envs[n].members(map[string]string{"node-a": "alive", "node-b": "alive", "node-c": "dead"})
		envs[n].Create(nodeSet("all", nodes, nil))
	}

	var ips []string
	for i := range 20 {
		ips = append(ips, fmt.Sprintf("10.5.0.%d", 150+i))
	}

	for _, e := range envs {
		for _, ip := range ips {
			e.Create(serviceIP(ip, "all"))
		}
	}

	for _, ip := range ips {
		want := rank.Order(ip, []string{"node-a", "node-b"})[0]

		for _, n := range slices.Sorted(maps.Keys(envs)) {
			envs[n].assertOwnership(ip, func(s *resourcepb.L2OwnershipSpec, a *assert.Assertions) {
				a.Equal(want, s.GetOwner())
				a.Equal(n == want, s.GetOwned())
			})
		}
	}
}

// A member live again (a healed partition) may have pointed clients at
// itself: the owner announces its IPs again. Nothing else makes it do so.
func TestReannounceWhenMemberReturns(t *testing.T) {
	e := start(t, "node-a", nil)
	e.members(map[string]string{"node-a": "alive", "node-b": "alive", "node-c": "alive"})
	e.Create(nodeSet("all", nodes, nil))

	ip := ipOwnedBy(t, "node-a", "")
	e.Create(serviceIP(ip, "all"))
	e.assertAnswered(map[string][]string{ip: {"eth0"}})

	// Members going away, suspect, an IP added: no re-announcement.
	e.Update(member("node-c", "suspect"))
	e.Update(member("node-b", "dead"))
	e.Create(serviceIP("10.5.0.99", "all"))
	e.assertOwnership("10.5.0.99", func(*resourcepb.L2OwnershipSpec, *assert.Assertions) {})
	require.Zero(t, e.resp.reannounces())

	e.Update(member("node-b", "alive"))
	require.Eventually(t, func() bool { return e.resp.reannounces() == 1 }, 5*time.Second, 10*time.Millisecond)
}
