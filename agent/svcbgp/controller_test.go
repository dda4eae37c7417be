package svcbgp_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/agent/svcbgp"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

const node = "node-b"

func setup(t *testing.T) *ctest.Harness {
	t.Helper()

	return ctest.New(t, &svcbgp.Controller{NodeName: node})
}

func rule(h *ctest.Harness, spec *resourcepb.BgpAdvertisementRule) {
	r := resources.NewBGPAdvertisementRule(spec.GetName())
	r.TypedSpec().Value = spec
	h.Create(r)
}

func nodeSet(h *ctest.Harness, spec *resourcepb.NodeSet, update bool) {
	r := resources.NewNodeSet(spec.GetName())
	r.TypedSpec().Value = spec

	if update {
		h.Update(r)

		return
	}

	h.Create(r)
}

func serviceIP(h *ctest.Harness, address string, bgp ...*resourcepb.BgpAnnouncement) {
	r := resources.NewServiceIP(address)
	r.TypedSpec().Value = &resourcepb.ServiceIPSpec{Address: address, Services: []string{"default/web"}, Bgp: bgp}
	h.Create(r)
}

// route plays the bgp controller: the speaker took the prefix, or failed.
func route(h *ctest.Harness, prefix, lastError string) {
	r := resources.NewBGPRoute(prefix)
	r.TypedSpec().Value = &resourcepb.BgpRouteSpec{Prefix: prefix, Announced: lastError == "", LastError: lastError}
	h.Create(r)
}

func advID(adv, prefix string) string { return svcbgp.AdvertisementID(adv, prefix) }

// A node in the announcement's node set advertises the IP as a host route
// with the rule's attributes and peers; one outside it says why, from the
// node set; leaving the set withdraws, and so does an IP no longer pushed.
func TestAnnouncesWhileInTheNodeSet(t *testing.T) {
	h := setup(t)

	rule(h, &resourcepb.BgpAdvertisementRule{
		Name: "external", Communities: []string{"65000:100"}, LargeCommunities: []string{"64513:1:2"}, LocalPref: 250, Peers: []string{"tor-a"},
	})
	nodeSet(h, &resourcepb.NodeSet{Name: "bgp/external", Nodes: []string{"node-a", "node-b", "node-c"}, DefaultReason: "not selected by advertisement"}, false)
	nodeSet(h, &resourcepb.NodeSet{
		Name: "bgp/external/default/local", Nodes: []string{"node-a"}, DefaultReason: "not selected by advertisement",
		Excluded: map[string]string{"node-b": "no local endpoints", "node-c": "node not ready"},
	}, false)

	serviceIP(h, "192.0.2.10", &resourcepb.BgpAnnouncement{Advertisement: "external", NodeSet: "bgp/external"})
	serviceIP(h, "192.0.2.20", &resourcepb.BgpAnnouncement{Advertisement: "external", NodeSet: "bgp/external/default/local"})

	ctest.AssertResource(h, advID("external", "192.0.2.10/32"), func(r *resources.BGPAdvertisement, a *assert.Assertions) {
		s := r.TypedSpec().Value
		a.Equal("192.0.2.10/32", s.GetPrefix())
		a.Equal("service/external", s.GetOwner())
		a.Equal([]string{"65000:100"}, s.GetCommunities())
		a.Equal([]string{"64513:1:2"}, s.GetLargeCommunities())
		a.EqualValues(250, s.GetLocalPref())
		a.Equal([]string{"tor-a"}, s.GetPeers())
	})
	ctest.AssertResource(h, resources.ServiceBGPStatusID("192.0.2.10", "external"), func(r *resources.ServiceBGPStatus, a *assert.Assertions) {
		s := r.TypedSpec().Value
		a.True(s.GetAnnounced())
		a.Empty(s.GetReason())
		a.Equal("not yet taken by the BGP speaker", s.GetError())
		a.Equal([]string{"default/web"}, s.GetServices())
	})

	// externalTrafficPolicy: Local without a local endpoint: no announcement, and why.
	ctest.AssertResource(h, resources.ServiceBGPStatusID("192.0.2.20", "external"), func(r *resources.ServiceBGPStatus, a *assert.Assertions) {
		s := r.TypedSpec().Value
		a.False(s.GetAnnounced())
		a.Equal("no local endpoints", s.GetReason())
		a.Equal("192.0.2.20/32", s.GetPrefix())
		a.NotNil(s.GetSince())
	})
	ctest.AssertNoResource[*resources.BGPAdvertisement](h, advID("external", "192.0.2.20/32"))

	// The endpoint moves here: announce; it moves away: withdraw.
	nodeSet(h, &resourcepb.NodeSet{Name: "bgp/external/default/local", Nodes: []string{"node-a", "node-b"}, DefaultReason: "not selected by advertisement"}, true)
	ctest.AssertResource(h, advID("external", "192.0.2.20/32"), func(*resources.BGPAdvertisement, *assert.Assertions) {})

	nodeSet(h, &resourcepb.NodeSet{Name: "bgp/external/default/local", Nodes: []string{"node-c"}, DefaultReason: "not selected by advertisement"}, true)
	ctest.AssertNoResource[*resources.BGPAdvertisement](h, advID("external", "192.0.2.20/32"))
	ctest.AssertResource(h, resources.ServiceBGPStatusID("192.0.2.20", "external"), func(r *resources.ServiceBGPStatus, a *assert.Assertions) {
		a.Equal("not selected by advertisement", r.TypedSpec().Value.GetReason(), "the set's default reason")
	})

	// The IP is no longer pushed.
	require.NoError(t, h.State.Destroy(h.Ctx(), resources.NewServiceIP("192.0.2.10").Metadata()))
	ctest.AssertNoResource[*resources.BGPAdvertisement](h, advID("external", "192.0.2.10/32"))
	ctest.AssertNoResource[*resources.ServiceBGPStatus](h, resources.ServiceBGPStatusID("192.0.2.10", "external"))
}

// With an aggregation length, IPs become one aggregate per advertisement and
// family; an IP under two advertisements is announced under each.
func TestAggregationAndSeveralAdvertisements(t *testing.T) {
	h := setup(t)

	rule(h, &resourcepb.BgpAdvertisementRule{Name: "agg", AggregationLength: 24, AggregationLengthV6: 64})
	rule(h, &resourcepb.BgpAdvertisementRule{Name: "hosts", Communities: []string{"65000:200"}})
	nodeSet(h, &resourcepb.NodeSet{Name: "all", Nodes: []string{node}}, false)

	both := []*resourcepb.BgpAnnouncement{{Advertisement: "agg", NodeSet: "all"}, {Advertisement: "hosts", NodeSet: "all"}}
	serviceIP(h, "192.0.2.10", both...)
	serviceIP(h, "192.0.2.11", both...)
	serviceIP(h, "fd99::10", both...)

	for _, id := range []string{
		advID("agg", "192.0.2.0/24"), advID("agg", "fd99::/64"),
		advID("hosts", "192.0.2.10/32"), advID("hosts", "192.0.2.11/32"), advID("hosts", "fd99::10/128"),
	} {
		ctest.AssertResource(h, id, func(*resources.BGPAdvertisement, *assert.Assertions) {})
	}

	ctest.AssertResource(h, resources.ServiceBGPStatusID("192.0.2.11", "agg"), func(r *resources.ServiceBGPStatus, a *assert.Assertions) {
		a.Equal("192.0.2.0/24", r.TypedSpec().Value.GetPrefix())
	})

	// One of two aggregated IPs goes: the aggregate stays for the other.
	require.NoError(t, h.State.Destroy(h.Ctx(), resources.NewServiceIP("192.0.2.10").Metadata()))
	ctest.AssertNoResource[*resources.BGPAdvertisement](h, advID("hosts", "192.0.2.10/32"))
	ctest.AssertResource(h, advID("agg", "192.0.2.0/24"), func(*resources.BGPAdvertisement, *assert.Assertions) {})
}

func TestPrefix(t *testing.T) {
	for _, c := range []struct {
		addr   string
		v4, v6 uint32
		want   string
	}{
		{"192.0.2.77", 0, 0, "192.0.2.77/32"},
		{"192.0.2.77", 32, 0, "192.0.2.77/32"},
		{"192.0.2.77", 28, 0, "192.0.2.64/28"},
		{"fd99::1:2", 24, 0, "fd99::1:2/128"},
		{"fd99::1:2", 0, 112, "fd99::1:0/112"},
	} {
		got := svcbgp.Prefix(netip.MustParseAddr(c.addr), &resourcepb.BgpAdvertisementRule{AggregationLength: c.v4, AggregationLengthV6: c.v6})
		require.Equal(t, c.want, got.String(), "%+v", c)
	}
}

// The announcing list for the push answer holds the IPs whose prefix the
// speaker holds without error.
func TestAnnouncerListsWhatTheSpeakerHolds(t *testing.T) {
	h := setup(t)

	rule(h, &resourcepb.BgpAdvertisementRule{Name: "external"})
	nodeSet(h, &resourcepb.NodeSet{Name: "all", Nodes: []string{node}}, false)
	nodeSet(h, &resourcepb.NodeSet{Name: "none", DefaultReason: "not selected by advertisement"}, false)

	serviceIP(h, "192.0.2.10", &resourcepb.BgpAnnouncement{Advertisement: "external", NodeSet: "all"})
	serviceIP(h, "192.0.2.11", &resourcepb.BgpAnnouncement{Advertisement: "external", NodeSet: "all"})
	serviceIP(h, "192.0.2.12", &resourcepb.BgpAnnouncement{Advertisement: "external", NodeSet: "none"})
	serviceIP(h, "192.0.2.13", &resourcepb.BgpAnnouncement{Advertisement: "missing", NodeSet: "all"})

	route(h, "192.0.2.10/32", "")
	route(h, "192.0.2.11/32", "no BGP peer: the agent config has no bgp section and the controller pushes no peer")

	ctest.AssertResource(h, resources.ServiceBGPStatusID("192.0.2.11", "external"), func(r *resources.ServiceBGPStatus, a *assert.Assertions) {
		a.True(r.TypedSpec().Value.GetAnnounced())
		a.Contains(r.TypedSpec().Value.GetError(), "no BGP peer")
	})
	ctest.AssertResource(h, resources.ServiceBGPStatusID("192.0.2.13", "missing"), func(r *resources.ServiceBGPStatus, a *assert.Assertions) {
		a.Equal("advertisement missing not pushed", r.TypedSpec().Value.GetReason())
	})

	// An IP whose advertisement names only peers this node lacks goes nowhere.
	rule(h, &resourcepb.BgpAdvertisementRule{Name: "to-tor-z", Peers: []string{"tor-z"}})
	serviceIP(h, "192.0.2.14", &resourcepb.BgpAnnouncement{Advertisement: "to-tor-z", NodeSet: "all"})
	route(h, "192.0.2.14/32", "")

	peer := resources.NewBGPPeerStatus("tor-a")
	h.Create(peer)

	ctest.AssertResource(h, resources.ServiceBGPStatusID("192.0.2.14", "to-tor-z"), func(r *resources.ServiceBGPStatus, a *assert.Assertions) {
		a.True(r.TypedSpec().Value.GetAnnounced())
		a.Equal("this node has none of the peers it goes to (tor-z)", r.TypedSpec().Value.GetError())
	})

	ann := svcbgp.Announcer{State: h.State}

	require.Eventually(t, func() bool {
		got := ann.Announcing()

		return len(got) == 1 && got[0] == "192.0.2.10"
	}, 5*time.Second, 10*time.Millisecond, "announcing: %v", ann.Announcing())
}
