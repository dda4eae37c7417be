package vip_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/talos-lb/talos-lb/agent/vip"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

var (
	vip4 = netip.MustParsePrefix("10.0.0.100/32")
	vip6 = netip.MustParsePrefix("fd00::100/128")
)

type fixture struct {
	h      *ctest.Harness
	links  *fakeLinks
	ann    *countingAnnouncer
	state  string
	config *resources.VIPConfig
}

func setup(t *testing.T, links map[string][]netip.Prefix) *fixture {
	t.Helper()

	return setupHold(t, links, 0)
}

// setupHold is setup with the AddressController's LeftoverHold.
func setupHold(t *testing.T, links map[string][]netip.Prefix, hold time.Duration) *fixture {
	t.Helper()

	f := &fixture{
		links: &fakeLinks{links: links},
		ann:   &countingAnnouncer{count: map[netip.Addr]int{}},
		state: t.TempDir(),
	}

	f.h = ctest.New(t,
		&vip.StatusController{Links: f.links, Changes: linkChanges{f.links}},
		&vip.AddressController{Links: f.links, Announcer: f.ann, LeftoverHold: hold},
	)

	f.config = resources.NewVIPConfig()
	f.config.TypedSpec().Value = &resourcepb.VipConfigSpec{
		NodeName: "cp-1", StateDir: f.state, Link: "eth0", HealthCheck: "apiserver",
		Addresses:        []string{vip4.Addr().String(), vip6.Addr().String()},
		AnnounceCount:    3,
		AnnounceInterval: durationpb.New(5 * time.Millisecond),
		AnnounceRefresh:  durationpb.New(0),
	}

	return f
}

func lanLinks() map[string][]netip.Prefix {
	return map[string][]netip.Prefix{"eth0": {netip.MustParsePrefix("10.0.0.2/24"), netip.MustParsePrefix("fd00::2/64"), netip.MustParsePrefix("fe80::1/64")}}
}

func (f *fixture) leadership(state, leader string) {
	f.leadershipSettled(state, leader, state == "Leader")
}

func (f *fixture) leadershipSettled(state, leader string, settled bool) {
	l := resources.NewVIPLeadership()
	l.TypedSpec().Value = &resourcepb.VipLeadershipSpec{State: state, Leader: leader, Settled: settled}

	if _, err := f.h.State.Get(f.h.Ctx(), l.Metadata()); err == nil {
		f.h.Update(l)
	} else {
		f.h.Create(l)
	}
}

func (f *fixture) health(state string) {
	h := resources.NewEndpointHealth("apiserver")
	h.TypedSpec().Value = &resourcepb.EndpointHealthSpec{State: state, Healthy: state == "healthy", LastError: "HTTP 500: etcd"}

	if _, err := f.h.State.Get(f.h.Ctx(), h.Metadata()); err == nil {
		f.h.Update(h)
	} else {
		f.h.Create(h)
	}
}

func (f *fixture) assertReason(t *testing.T, address, reason string) {
	t.Helper()

	ctest.AssertResource(f.h, address, func(r *resources.VIPStatus, a *assert.Assertions) {
		a.Equal(reason, r.TypedSpec().Value.GetReason())
		a.Equal(reason == "", r.TypedSpec().Value.GetHolding())
	})
}

func TestLeaderWithHealthyAPIServerHoldsAndAnnounces(t *testing.T) {
	f := setup(t, lanLinks())
	f.h.Create(f.config)
	f.leadership("Follower", "")
	f.health("healthy")

	f.assertReason(t, "10.0.0.100", "no quorum")

	f.leadership("Follower", "cp-2")
	f.assertReason(t, "10.0.0.100", "not leader (cp-2 is)")

	f.leadershipSettled("Leader", "cp-1", false)
	f.assertReason(t, "10.0.0.100", "taking over: waiting out any previous leader's lease")

	f.leadership("Leader", "cp-1")
	f.assertReason(t, "10.0.0.100", "")
	f.assertReason(t, "fd00::100", "")

	ctest.AssertResource(f.h, "eth0/"+vip4.String(), func(r *resources.ManagedAddress, a *assert.Assertions) {
		a.Equal(uint32(3), r.TypedSpec().Value.GetAnnouncements())
	})
	require.True(t, f.links.has("eth0", vip4))
	require.True(t, f.links.has("eth0", vip6))
	require.Eventually(t, func() bool { return f.ann.sent(vip6.Addr()) == 3 }, 5*time.Second, 5*time.Millisecond)

	// The API server fails: the VIP goes, the reason says why.
	f.health("unhealthy")
	f.assertReason(t, "10.0.0.100", "apiserver unhealthy: HTTP 500: etcd")
	ctest.AssertNoResource[*resources.ManagedAddress](f.h, "eth0/"+vip4.String())
	require.False(t, f.links.has("eth0", vip4))
}

func TestBadVIPsAreReportedNotHeld(t *testing.T) {
	links := lanLinks()
	// Someone else's address equal to the VIP: never ours to hold or remove.
	links["eth0"] = append(links["eth0"], vip6)

	f := setup(t, links)
	f.config.TypedSpec().Value.Addresses = []string{"10.0.0.100", "fd00::100", "192.168.1.1"}
	f.h.Create(f.config)
	f.leadership("Leader", "cp-1")
	f.health("healthy")

	f.assertReason(t, "10.0.0.100", "")
	f.assertReason(t, "fd00::100", "fd00::100 is already an address of eth0, not added by talos-lb (a VIP must not be a node address)")
	f.assertReason(t, "192.168.1.1", "192.168.1.1 is inside no subnet of eth0 (10.0.0.2/24)")
	require.False(t, f.links.wasRemoved(vip6))

	cfg := resources.NewVIPConfig()
	cfg.TypedSpec().Value = f.config.TypedSpec().Value
	cfg.TypedSpec().Value.Link = "eth9"
	f.h.Update(cfg)
	f.assertReason(t, "10.0.0.100", "link eth9 does not exist")
}

func TestLeftoversOfACrashAreRemovedAtStart(t *testing.T) {
	f := setup(t, lanLinks())
	f.links.links["eth0"] = append(f.links.links["eth0"], vip4)

	require.NoError(t, os.MkdirAll(filepath.Join(f.state, "vip"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(f.state, "vip", "addresses.json"), []byte(`[{"link":"eth0","prefix":"10.0.0.100/32"}]`), 0o600))

	f.h.Create(f.config)
	f.leadership("Follower", "cp-2")

	require.Eventually(t, func() bool { return !f.links.has("eth0", vip4) }, 5*time.Second, 10*time.Millisecond)
	f.assertReason(t, "10.0.0.100", "not leader (cp-2 is)")
}

// bgpLeftover sets f up as an agent restarted after a crash in BGP mode:
// its predecessor's VIP still on lo, and recorded as ours.
func bgpLeftover(t *testing.T, hold time.Duration) *fixture {
	t.Helper()

	links := lanLinks()
	links["lo"] = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), vip4}
	f := setupHold(t, links, hold)

	require.NoError(t, os.MkdirAll(filepath.Join(f.state, "vip"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(f.state, "vip", "addresses.json"), []byte(`[{"link":"lo","prefix":"10.0.0.100/32"}]`), 0o600))

	f.config.TypedSpec().Value.Mode = "bgp"
	f.config.TypedSpec().Value.Link = "lo"
	f.config.TypedSpec().Value.Addresses = []string{vip4.Addr().String()}

	return f
}

// Routers that keep a crashed node's routes (graceful restart) still send it
// the VIP's traffic: the restarted agent keeps the VIP its predecessor left
// on lo while the health gate has no verdict, and holds it on as usual when
// the verdict is good. It never leaves lo meanwhile.
func TestBGPLeftoverStaysThroughTheFirstHealthVerdict(t *testing.T) {
	f := bgpLeftover(t, time.Minute)
	f.h.Create(f.config)

	f.assertReason(t, "10.0.0.100", "apiserver health unknown")
	time.Sleep(200 * time.Millisecond) // passes of both controllers
	assert.Empty(t, f.links.removedList(), "the VIP left lo before the health gate decided")

	f.health("healthy")
	f.assertReason(t, "10.0.0.100", "")
	time.Sleep(100 * time.Millisecond)

	assert.True(t, f.links.has("lo", vip4))
	assert.Empty(t, f.links.removedList(), "the VIP left lo while the node was about to hold it")

	// From here on it is held as usual: a failing gate takes it away.
	f.health("unhealthy")
	require.Eventually(t, func() bool { return !f.links.has("lo", vip4) }, 5*time.Second, 10*time.Millisecond)
}

// A verdict against the node, or none within LeftoverHold, removes the leftover.
func TestBGPLeftoverGoesOnABadVerdictOrNone(t *testing.T) {
	f := bgpLeftover(t, time.Minute)
	f.health("unhealthy")
	f.h.Create(f.config)

	require.Eventually(t, func() bool { return !f.links.has("lo", vip4) }, 5*time.Second, 10*time.Millisecond)

	g := bgpLeftover(t, 300*time.Millisecond)
	g.h.Create(g.config)

	g.assertReason(t, "10.0.0.100", "apiserver health unknown")
	require.Eventually(t, func() bool { return !g.links.has("lo", vip4) }, 5*time.Second, 10*time.Millisecond)
}

func TestHolderBalancesOverHealthyAPIServers(t *testing.T) {
	h := ctest.New(t, &vip.IPVSController{})

	cfg := resources.NewVIPConfig()
	cfg.TypedSpec().Value = &resourcepb.VipConfigSpec{
		NodeName: "cp-1", Addresses: []string{"10.0.0.100", "fd00::100"},
		IpvsPort: 6443, IpvsBackendPort: 6443, IpvsScheduler: "mh",
		Peers: []*resourcepb.VipPeer{{Name: "cp-1", Address: "10.0.0.2:50071"}, {Name: "cp-2", Address: "10.0.0.3:50071"}},
	}
	h.Create(cfg)

	for name, healthy := range map[string]bool{"cp-1": true, "cp-2": false} {
		eh := resources.NewEndpointHealth(resources.IPVSBackendCheckID(name))
		eh.TypedSpec().Value.Healthy = healthy
		h.Create(eh)
	}

	status := resources.NewVIPStatus("10.0.0.100")
	status.TypedSpec().Value.Address, status.TypedSpec().Value.Holding = "10.0.0.100", true
	h.Create(status)

	ctest.AssertResource(h, "vip-10.0.0.100", func(r *resources.IPVSService, a *assert.Assertions) {
		s := r.TypedSpec().Value
		a.Equal(uint32(6443), s.GetPort())
		a.Equal("mh", s.GetScheduler())
		a.True(s.GetSnat())
		a.Len(s.GetRealServers(), 2)
		a.Equal(uint32(1), s.GetRealServers()[0].GetWeight())
		a.Equal(uint32(0), s.GetRealServers()[1].GetWeight(), "an unhealthy API server drains")
	})

	// Losing the VIP removes the service.
	status.TypedSpec().Value.Holding = false
	h.Update(status)
	ctest.AssertNoResource[*resources.IPVSService](h, "vip-10.0.0.100")

}
