package bgp_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/talos-lb/talos-lb/agent/bgp"
	"github.com/talos-lb/talos-lb/agent/bgp/speaker"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// fakeSpeaker records the last desired state it was given.
type fakeSpeaker struct {
	mu      sync.Mutex
	last    speaker.Desired
	stopped bool
	changes chan struct{}
}

func (f *fakeSpeaker) Apply(_ context.Context, d speaker.Desired) (speaker.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.last = d

	return speaker.Result{}, nil
}

func (f *fakeSpeaker) Peers(context.Context) ([]speaker.PeerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()

	var out []speaker.PeerState
	for _, p := range f.last.Peers {
		out = append(out, speaker.PeerState{Address: p.Address, State: "established", PrefixesSent: uint64(len(f.last.Paths))})
	}

	return out, nil
}

func (f *fakeSpeaker) Changes() <-chan struct{} { return f.changes }

func (f *fakeSpeaker) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.stopped = true

	return nil
}

func (f *fakeSpeaker) paths() []speaker.Path {
	f.mu.Lock()
	defer f.mu.Unlock()

	return f.last.Paths
}

type fakeHost struct{}

func (fakeHost) SourceFor(netip.Addr) (netip.Addr, error) {
	return netip.MustParseAddr("10.0.0.2"), nil
}
func (fakeHost) Addresses() ([]netip.Prefix, error) {
	return []netip.Prefix{netip.MustParsePrefix("fd00::2/64"), netip.MustParsePrefix("10.0.0.2/24")}, nil
}

func setup(t *testing.T) (*ctest.Harness, *fakeSpeaker) {
	t.Helper()

	sp := &fakeSpeaker{changes: make(chan struct{})}
	h := ctest.New(t, &bgp.Controller{Speaker: sp, Host: fakeHost{}, NodeName: "cp-1"})

	cfg := resources.NewBGPConfig()
	cfg.TypedSpec().Value = &resourcepb.BgpConfigSpec{Asn: 64513, Peers: []*resourcepb.BgpPeerSpec{
		{Name: "tor-a", Address: "10.0.0.1", Port: 179, Asn: 64512, HoldTime: durationpb.New(9e9), Keepalive: durationpb.New(3e9)},
		{Name: "tor-b", Address: "10.0.0.254", Port: 179, Asn: 64512, PasswordFile: "/nonexistent/password"},
	}}
	h.Create(cfg)

	return h, sp
}

func advertise(h *ctest.Harness, owner, prefix string, communities ...string) {
	a := resources.NewBGPAdvertisement(owner + "/" + prefix)
	a.TypedSpec().Value = &resourcepb.BgpAdvertisementSpec{Owner: owner, Prefix: prefix, Communities: communities}
	h.Create(a)
}

func TestPrefixIsAnnouncedOnceAndWithdrawnWithItsLastOwner(t *testing.T) {
	h, sp := setup(t)

	advertise(h, "vip", "192.0.2.10/32", "65000:100")
	advertise(h, "service/default/web", "192.0.2.10/32", "65000:200")

	ctest.AssertResource(h, "192.0.2.10/32", func(r *resources.BGPRoute, a *assert.Assertions) {
		a.True(r.TypedSpec().Value.GetAnnounced())
		a.Equal([]string{"service/default/web", "vip"}, r.TypedSpec().Value.GetOwners())
		a.Equal([]string{"65000:100", "65000:200"}, r.TypedSpec().Value.GetCommunities())
	})

	require.Len(t, sp.paths(), 1)

	require.NoError(t, h.State.Destroy(h.Ctx(), resources.NewBGPAdvertisement("vip/192.0.2.10/32").Metadata()))
	ctest.AssertResource(h, "192.0.2.10/32", func(r *resources.BGPRoute, a *assert.Assertions) {
		a.Equal([]string{"service/default/web"}, r.TypedSpec().Value.GetOwners())
	})

	require.NoError(t, h.State.Destroy(h.Ctx(), resources.NewBGPAdvertisement("service/default/web/192.0.2.10/32").Metadata()))
	ctest.AssertNoResource[*resources.BGPRoute](h, "192.0.2.10/32")
	require.Empty(t, sp.paths())
}

func TestBadPeerOrCommunityKeepsTheRestRunning(t *testing.T) {
	h, sp := setup(t)

	advertise(h, "vip", "192.0.2.10/32", "65000:100000")
	advertise(h, "vip", "192.0.2.11/32")

	// The peer without its password file is reported and left out; the other runs.
	ctest.AssertResource(h, "tor-b", func(r *resources.BGPPeerStatus, a *assert.Assertions) {
		a.Equal("not running", r.TypedSpec().Value.GetState())
		a.Contains(r.TypedSpec().Value.GetLastError(), "passwordFile")
	})
	ctest.AssertResource(h, "tor-a", func(r *resources.BGPPeerStatus, a *assert.Assertions) {
		a.Equal("established", r.TypedSpec().Value.GetState())
		a.Equal("10.0.0.1", r.TypedSpec().Value.GetAddress())
	})

	// The malformed community keeps its prefix out, not the other.
	ctest.AssertResource(h, "192.0.2.10/32", func(r *resources.BGPRoute, a *assert.Assertions) {
		a.False(r.TypedSpec().Value.GetAnnounced())
		a.Contains(r.TypedSpec().Value.GetLastError(), "65000:100000")
	})
	ctest.AssertResource(h, "192.0.2.11/32", func(r *resources.BGPRoute, a *assert.Assertions) {
		a.True(r.TypedSpec().Value.GetAnnounced())
	})

	sp.mu.Lock()
	defer sp.mu.Unlock()

	require.Len(t, sp.last.Peers, 1)
	require.Equal(t, netip.MustParseAddr("10.0.0.2"), sp.last.Peers[0].LocalAddress, "the session source is pinned")
	require.Equal(t, netip.MustParseAddr("10.0.0.2"), sp.last.Global.RouterID, "router ID: the node's first IPv4")
}

func TestShutdownSendsCease(t *testing.T) {
	h, sp := setup(t)

	lifecycle := resources.NewAgentLifecycle()
	lifecycle.TypedSpec().Value.ShuttingDown = true
	h.Create(lifecycle)

	require.Eventually(t, func() bool {
		sp.mu.Lock()
		defer sp.mu.Unlock()

		return sp.stopped
	}, 5e9, 1e7)
}

func pushPeer(h *ctest.Harness, name, address string, localASN uint32, passwordFile string) {
	p := resources.NewPushedBGPPeer(name)
	p.TypedSpec().Value = &resourcepb.PushedBgpPeer{
		LocalAsn: localASN,
		Peer:     &resourcepb.BgpPeerSpec{Name: name, Address: address, Asn: 64512, PasswordFile: passwordFile},
	}
	h.Create(p)
}

func (f *fakeSpeaker) desired() speaker.Desired {
	f.mu.Lock()
	defer f.mu.Unlock()

	return f.last
}

// Pushed peers run without any bgp section in the agent config: the speaker's
// AS is their lowest local ASN and each session speaks as its own.
func TestPushedPeersRunWithoutConfig(t *testing.T) {
	sp := &fakeSpeaker{changes: make(chan struct{})}
	h := ctest.New(t, &bgp.Controller{Speaker: sp, Host: fakeHost{}, NodeName: "w-1"})

	pushPeer(h, "tor-b", "10.0.0.254", 64700, "")
	pushPeer(h, "tor-a", "10.0.0.1", 64600, "")
	pushPeer(h, "tor-c", "10.0.0.253", 64600, "/nonexistent/password")
	advertise(h, "service/web", "192.0.2.20/32")

	ctest.AssertResource(h, "tor-a", func(r *resources.BGPPeerStatus, a *assert.Assertions) {
		a.Equal("established", r.TypedSpec().Value.GetState())
		a.Equal(bgp.SourceController, r.TypedSpec().Value.GetSource())
		a.EqualValues(64600, r.TypedSpec().Value.GetLocalAsn())
	})
	ctest.AssertResource(h, "tor-b", func(r *resources.BGPPeerStatus, a *assert.Assertions) {
		a.Equal("established", r.TypedSpec().Value.GetState())
		a.EqualValues(64700, r.TypedSpec().Value.GetLocalAsn())
	})
	// A pushed peer whose password file cannot be read fails alone.
	ctest.AssertResource(h, "tor-c", func(r *resources.BGPPeerStatus, a *assert.Assertions) {
		a.Equal("not running", r.TypedSpec().Value.GetState())
		a.Contains(r.TypedSpec().Value.GetLastError(), "passwordFile")
	})
	ctest.AssertResource(h, "192.0.2.20/32", func(r *resources.BGPRoute, a *assert.Assertions) {
		a.True(r.TypedSpec().Value.GetAnnounced())
	})

	d := sp.desired()
	require.EqualValues(t, 64600, d.Global.ASN, "the lowest pushed local ASN")
	require.Equal(t, netip.MustParseAddr("10.0.0.2"), d.Global.RouterID, "router ID synthesized as with a config")

	local := map[string]uint32{}
	for _, p := range d.Peers {
		local[p.Name] = p.LocalASN
	}

	require.Equal(t, map[string]uint32{"tor-a": 64600, "tor-b": 64700}, local)

	// The controller pushes no peer any more: sessions close, routes say why.
	for _, name := range []string{"tor-a", "tor-b", "tor-c"} {
		require.NoError(t, h.State.Destroy(h.Ctx(), resources.NewPushedBGPPeer(name).Metadata()))
	}

	ctest.AssertResource(h, "192.0.2.20/32", func(r *resources.BGPRoute, a *assert.Assertions) {
		a.Contains(r.TypedSpec().Value.GetLastError(), "no BGP peer")
	})
	ctest.AssertNoResource[*resources.BGPPeerStatus](h, "tor-a")
	require.Empty(t, sp.desired().Peers)
	require.Empty(t, sp.desired().Paths)
}

// Config and pushed peers run side by side; the config wins a name or an address.
func TestConfigPeerWinsOverPushedPeer(t *testing.T) {
	h, sp := setup(t)

	pushPeer(h, "tor-a", "10.0.0.50", 0, "")     // same name as a config peer
	pushPeer(h, "other", "10.0.0.1", 0, "")      // same address as config peer tor-a
	pushPeer(h, "tor-x", "10.0.0.77", 64600, "") // runs beside the config's

	ctest.AssertResource(h, "tor-a", func(r *resources.BGPPeerStatus, a *assert.Assertions) {
		a.Equal(bgp.SourceConfig, r.TypedSpec().Value.GetSource())
		a.Equal("10.0.0.1", r.TypedSpec().Value.GetAddress())
		a.Contains(r.TypedSpec().Value.GetNote(), "same name")
		a.Equal("established", r.TypedSpec().Value.GetState())
	})
	ctest.AssertResource(h, "other", func(r *resources.BGPPeerStatus, a *assert.Assertions) {
		a.Equal("not running", r.TypedSpec().Value.GetState())
		a.Contains(r.TypedSpec().Value.GetLastError(), "config peer tor-a")
	})
	ctest.AssertResource(h, "tor-x", func(r *resources.BGPPeerStatus, a *assert.Assertions) {
		a.Equal("established", r.TypedSpec().Value.GetState())
		a.EqualValues(64600, r.TypedSpec().Value.GetLocalAsn())
	})

	d := sp.desired()
	require.EqualValues(t, 64513, d.Global.ASN, "the config's AS")
	require.Len(t, d.Peers, 2, "tor-a from the config and tor-x pushed: %+v", d.Peers)
}

// A pushed peer needs a local ASN from the push or the config.
func TestPushedPeerWithoutLocalASN(t *testing.T) {
	sp := &fakeSpeaker{changes: make(chan struct{})}
	h := ctest.New(t, &bgp.Controller{Speaker: sp, Host: fakeHost{}, NodeName: "w-1"})

	pushPeer(h, "tor-a", "10.0.0.1", 0, "")
	pushPeer(h, "tor-b", "10.0.0.254", 64600, "")

	ctest.AssertResource(h, "tor-a", func(r *resources.BGPPeerStatus, a *assert.Assertions) {
		a.Equal("not running", r.TypedSpec().Value.GetState())
		a.Contains(r.TypedSpec().Value.GetLastError(), "no local ASN")
	})
	ctest.AssertResource(h, "tor-b", func(r *resources.BGPPeerStatus, a *assert.Assertions) {
		a.Equal("established", r.TypedSpec().Value.GetState())
	})
}

func advertiseTo(h *ctest.Harness, owner, prefix string, peers ...string) {
	a := resources.NewBGPAdvertisement(owner + "/" + prefix)
	a.TypedSpec().Value = &resourcepb.BgpAdvertisementSpec{Owner: owner, Prefix: prefix, Peers: peers}
	h.Create(a)
}

// A prefix goes to the union of the peers its owners name; an owner naming
// none wants every peer.
func TestRoutePeersAreTheUnionOfItsAdvertisements(t *testing.T) {
	h, sp := setup(t)

	advertiseTo(h, "service/a", "192.0.2.30/32", "tor-a")
	advertiseTo(h, "service/b", "192.0.2.30/32", "tor-b")
	advertiseTo(h, "service/a", "192.0.2.31/32", "tor-a")
	advertiseTo(h, "service/b", "192.0.2.31/32")

	ctest.AssertResource(h, "192.0.2.30/32", func(r *resources.BGPRoute, a *assert.Assertions) {
		a.Equal([]string{"tor-a", "tor-b"}, r.TypedSpec().Value.GetPeers())
	})
	ctest.AssertResource(h, "192.0.2.31/32", func(r *resources.BGPRoute, a *assert.Assertions) {
		a.Empty(r.TypedSpec().Value.GetPeers(), "every peer")
		a.Len(r.TypedSpec().Value.GetOwners(), 2)
	})

	require.Eventually(t, func() bool {
		peers := map[string][]string{}
		for _, p := range sp.paths() {
			peers[p.Prefix.String()] = p.Peers
		}

		return len(peers) == 2 && slices.Equal(peers["192.0.2.30/32"], []string{"tor-a", "tor-b"}) && peers["192.0.2.31/32"] == nil
	}, 5*time.Second, 10*time.Millisecond)

	// The owner wanting every peer goes: the route narrows to the other's peers.
	require.NoError(t, h.State.Destroy(h.Ctx(), resources.NewBGPAdvertisement("service/b/192.0.2.31/32").Metadata()))
	ctest.AssertResource(h, "192.0.2.31/32", func(r *resources.BGPRoute, a *assert.Assertions) {
		a.Equal([]string{"tor-a"}, r.TypedSpec().Value.GetPeers())
	})
}

// Without config or pushed peers, a wanted prefix says why it goes nowhere.
func TestNoPeerAtAll(t *testing.T) {
	sp := &fakeSpeaker{changes: make(chan struct{})}
	h := ctest.New(t, &bgp.Controller{Speaker: sp, Host: fakeHost{}, NodeName: "w-1"})

	advertise(h, "service/web", "192.0.2.20/32")

	ctest.AssertResource(h, "192.0.2.20/32", func(r *resources.BGPRoute, a *assert.Assertions) {
		a.False(r.TypedSpec().Value.GetAnnounced())
		a.Contains(r.TypedSpec().Value.GetLastError(), "no BGP peer")
	})
}
