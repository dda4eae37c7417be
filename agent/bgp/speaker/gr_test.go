package speaker_test

import (
	"net/netip"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/agent/bgp/speaker"
)

// helperRouter is a router that helps its peers through a graceful restart
// (RFC 4724's receiving speaker), as BIRD and FRR do.
func helperRouter(t *testing.T, name string, addr netip.Addr) *router {
	t.Helper()

	r := startRouter(t, name, addr, nodeASN)
	ctx := t.Context()

	require.NoError(t, r.s.DeletePeer(ctx, &api.DeletePeerRequest{Address: "127.0.0.1"}))
	require.NoError(t, r.s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:            &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: nodeASN},
		Transport:       &api.Transport{PassiveMode: true, LocalAddress: addr.String()},
		Timers:          &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3}},
		GracefulRestart: &api.GracefulRestart{Enabled: true, HelperOnly: true},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}},
	}}))

	return r
}

// seenPeer is the router's view of the speaker's session.
func (r *router) seenPeer(t *testing.T) *api.Peer {
	t.Helper()

	var seen *api.Peer

	require.NoError(t, r.s.ListPeer(t.Context(), &api.ListPeerRequest{}, func(p *api.Peer) { seen = p }))
	require.NotNil(t, seen, "router %s has no peer", r.name)

	return seen
}

// A router keeps a node's routes over its restart only for the address
// families listed in the node's graceful restart capability: announcing the
// capability alone (GoBGP's peer-level switch) lists none, and BIRD then
// withdrew the routes of a SIGKILLed agent at once.
func TestGracefulRestartCapabilityListsTheFamily(t *testing.T) {
	r := helperRouter(t, "tor-gr", netip.MustParseAddr("127.0.0.7"))
	sp := newSpeaker(t)

	p := r.peer(0)
	p.RestartTime = 30 * time.Second

	apply(t, sp, []speaker.Peer{p}, path("10.99.2.1/32"))
	r.waitRoutes(t, "10.99.2.1/32")

	seen := r.seenPeer(t)
	gr := seen.GetGracefulRestart()
	require.EqualValues(t, 30, gr.GetPeerRestartTime(), "restart time the router received")

	require.Len(t, seen.GetAfiSafis(), 1)
	mp := seen.GetAfiSafis()[0].GetMpGracefulRestart().GetState()
	require.True(t, mp.GetReceived(), "IPv4 unicast is not in the node's graceful restart capability")
	require.True(t, mp.GetEnabled(), "graceful restart not negotiated for IPv4 unicast")
}

// Without graceful restart the node sends no such capability.
func TestNoGracefulRestartByDefault(t *testing.T) {
	r := helperRouter(t, "tor-nogr", netip.MustParseAddr("127.0.0.8"))
	sp := newSpeaker(t)

	apply(t, sp, []speaker.Peer{r.peer(0)}, path("10.99.2.2/32"))
	r.waitRoutes(t, "10.99.2.2/32")

	seen := r.seenPeer(t)
	require.Zero(t, seen.GetGracefulRestart().GetPeerRestartTime())
	require.False(t, seen.GetAfiSafis()[0].GetMpGracefulRestart().GetState().GetReceived())
}

// A (re)started speaker tells its routers it restarted with forwarding kept,
// and GoBGP then holds its routes back until every graceful-restart router
// has sent End-of-RIB, or the selection deferral timer (GoBGP's default
// 360 s) runs out. A router that is down must not hold the others' routes
// back that long: this node learns nothing, so there is nothing to wait for.
func TestGracefulRestartDoesNotWaitForARouterThatIsDown(t *testing.T) {
	up := helperRouter(t, "tor-up", netip.MustParseAddr("127.0.0.9"))
	sp := newSpeaker(t)

	upPeer := up.peer(0)
	upPeer.RestartTime = 30 * time.Second

	// Nobody listens there: the session never comes up.
	downAddr := netip.MustParseAddr("127.0.0.10")
	downPeer := speaker.Peer{
		Name: "tor-down", Address: downAddr, Port: freePort(t, downAddr), ASN: routerASN,
		LocalAddress: netip.MustParseAddr("127.0.0.1"), HoldTime: 9 * time.Second, Keepalive: 3 * time.Second,
		RestartTime: 30 * time.Second,
	}

	start := time.Now()

	apply(t, sp, []speaker.Peer{upPeer, downPeer}, path("10.99.2.3/32"))
	up.waitRoutes(t, "10.99.2.3/32")
	t.Logf("route reached the router that is up after %v", time.Since(start))
}
