package bgp_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"

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
