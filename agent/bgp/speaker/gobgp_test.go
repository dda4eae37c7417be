package speaker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/agent/bgp/speaker"
)

// These tests run the real speaker against real GoBGP servers standing in
// for routers, on loopback addresses (127.0.0.0/8 is all local on Linux), so
// they need no root: what each router receives is read from its RIB.

const (
	nodeASN   = 64513
	routerASN = 64512
)

// router is a GoBGP server accepting the speaker at 127.0.0.1.
type router struct {
	name string
	addr netip.Addr
	port uint32
	s    *server.BgpServer

	mu   sync.Mutex
	ever map[string]bool // every prefix ever announced to it
}

func freePort(t *testing.T, addr netip.Addr) uint32 {
	t.Helper()

	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	require.NoError(t, err)

	port := l.Addr().(*net.TCPAddr).Port //nolint:forcetypeassert // a TCP listener
	require.NoError(t, l.Close())

	return uint32(port) //nolint:gosec // a port
}

// startRouter runs a router on addr expecting the speaker to speak as nodeAS.
func startRouter(t *testing.T, name string, addr netip.Addr, nodeAS uint32) *router {
	t.Helper()

	r := &router{name: name, addr: addr, port: freePort(t, addr), ever: map[string]bool{}}
	r.s = server.NewBgpServer(server.LoggerOption(slog.New(slog.NewTextHandler(io.Discard, nil)), &slog.LevelVar{}))

	go r.s.Serve()

	ctx := t.Context()
	require.NoError(t, r.s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: routerASN, RouterId: addr.String(), ListenPort: int32(r.port), ListenAddresses: []string{addr.String()}, //nolint:gosec // a port
	}}))
	require.NoError(t, r.s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: nodeAS},
		Transport: &api.Transport{PassiveMode: true, LocalAddress: addr.String()},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3}},
	}}))

	// Every update received, so a route announced and withdrawn at once is seen too.
	require.NoError(t, r.s.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPathUpdate: func(paths []*apiutil.Path, _ time.Time) {
			r.mu.Lock()
			defer r.mu.Unlock()

			for _, p := range paths {
				if !p.Withdrawal {
					r.ever[p.Nlri.String()] = true
				}
			}
		},
	}, server.WatchUpdate(false, "", "")))

	t.Cleanup(func() {
		r.s.StopBgp(context.Background(), &api.StopBgpRequest{}) //nolint:errcheck
		r.s.Stop()
	})

	return r
}

func (r *router) peer(localASN uint32) speaker.Peer {
	return speaker.Peer{
		Name: r.name, Address: r.addr, Port: r.port, ASN: routerASN, LocalASN: localASN,
		LocalAddress: netip.MustParseAddr("127.0.0.1"), HoldTime: 9 * time.Second, Keepalive: 3 * time.Second,
	}
}

// routes lists what the router learned: prefix → AS path.
func (r *router) routes(t *testing.T) map[string]string {
	t.Helper()

	out := map[string]string{}

	err := r.s.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC},
		func(prefix bgp.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				for _, a := range p.Attrs {
					if asPath, ok := a.(*bgp.PathAttributeAsPath); ok {
						out[prefix.String()] = asPath.String()
					}
				}
			}
		})
	require.NoError(t, err)

	return out
}

// waitRoutes waits until the router has exactly the prefixes in want.
func (r *router) waitRoutes(t *testing.T, want ...string) map[string]string {
	t.Helper()

	slices.Sort(want)

	var got map[string]string

	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		got = r.routes(t)
		if slices.Equal(slices.Sorted(maps.Keys(got)), want) {
			return got
		}

		time.Sleep(20 * time.Millisecond)
	}

	t.Fatalf("router %s: want prefixes %v, have %v", r.name, want, got)

	return nil
}

// neverGot fails the test if the router was ever announced one of prefixes.
func (r *router) neverGot(t *testing.T, prefixes ...string) {
	t.Helper()

	r.mu.Lock()
	defer r.mu.Unlock()

	for _, p := range prefixes {
		if r.ever[p] {
			t.Errorf("router %s was sent %s, which is not meant for it", r.name, p)
		}
	}
}

func path(prefix string, peers ...string) speaker.Path {
	return speaker.Path{Prefix: netip.MustParsePrefix(prefix), Peers: peers}
}

func apply(t *testing.T, sp *speaker.GoBGP, peers []speaker.Peer, paths ...speaker.Path) {
	t.Helper()

	res, err := sp.Apply(t.Context(), speaker.Desired{
		Global: speaker.Global{ASN: nodeASN, RouterID: netip.MustParseAddr("10.0.0.2")},
		Peers:  peers,
		Paths:  paths,
	})
	require.NoError(t, err)

	for name, err := range res.PeerErrors {
		t.Errorf("peer %s: %v", name, err)
	}

	for prefix, err := range res.PathErrors {
		t.Errorf("path %s: %v", prefix, err)
	}
}

func newSpeaker(t *testing.T) *speaker.GoBGP {
	t.Helper()

	sp := speaker.NewGoBGP(slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { sp.Stop(context.Background()) }) //nolint:errcheck

	return sp
}

// A path naming peers reaches those peers only; changing its peers withdraws
// it from the peers it leaves and announces it to those it joins, with or
// without a change of attributes; a peer added later gets only what is meant
// for it.
func TestPathsGoOnlyToTheirPeers(t *testing.T) {
	a := startRouter(t, "tor-a", netip.MustParseAddr("127.0.0.2"), nodeASN)
	b := startRouter(t, "tor-b", netip.MustParseAddr("127.0.0.3"), nodeASN)
	sp := newSpeaker(t)
	peers := []speaker.Peer{a.peer(0), b.peer(0)}

	apply(t, sp, peers, path("10.99.0.1/32"), path("10.99.0.2/32", "tor-a"), path("10.99.0.3/32", "tor-b"), path("10.99.0.4/32", "tor-a", "tor-b"))
	a.waitRoutes(t, "10.99.0.1/32", "10.99.0.2/32", "10.99.0.4/32")
	b.waitRoutes(t, "10.99.0.1/32", "10.99.0.3/32", "10.99.0.4/32")
	a.neverGot(t, "10.99.0.3/32")
	b.neverGot(t, "10.99.0.2/32")

	// Peers change, attributes do not.
	apply(t, sp, peers, path("10.99.0.1/32", "tor-b"), path("10.99.0.2/32", "tor-b"), path("10.99.0.3/32"), path("10.99.0.4/32", "tor-a", "tor-b"))
	a.waitRoutes(t, "10.99.0.3/32", "10.99.0.4/32")
	b.waitRoutes(t, "10.99.0.1/32", "10.99.0.2/32", "10.99.0.3/32", "10.99.0.4/32")

	// Peers and attributes change together.
	moved := path("10.99.0.2/32", "tor-a")
	moved.Communities = []uint32{65000<<16 | 100}
	apply(t, sp, peers, path("10.99.0.1/32", "tor-b"), moved, path("10.99.0.3/32"), path("10.99.0.4/32", "tor-a", "tor-b"))
	a.waitRoutes(t, "10.99.0.2/32", "10.99.0.3/32", "10.99.0.4/32")
	b.waitRoutes(t, "10.99.0.1/32", "10.99.0.3/32", "10.99.0.4/32")

	// A peer added later starts with its filter in place.
	c := startRouter(t, "tor-c", netip.MustParseAddr("127.0.0.4"), nodeASN)
	peers = append(peers, c.peer(0))
	apply(t, sp, peers, path("10.99.0.1/32", "tor-b"), moved, path("10.99.0.3/32"), path("10.99.0.4/32", "tor-a", "tor-b"))
	c.waitRoutes(t, "10.99.0.3/32")
	c.neverGot(t, "10.99.0.1/32", "10.99.0.2/32", "10.99.0.4/32")

	// A removed peer takes its filter along; withdrawn paths leave every router.
	apply(t, sp, peers[1:], path("10.99.0.1/32", "tor-b"))
	b.waitRoutes(t, "10.99.0.1/32")
	c.waitRoutes(t)
}

// Each session may speak as its own AS (pushed peers with different local
// ASNs), independently of the speaker's global AS.
func TestPerPeerLocalASN(t *testing.T) {
	a := startRouter(t, "tor-a", netip.MustParseAddr("127.0.0.5"), nodeASN)
	b := startRouter(t, "tor-b", netip.MustParseAddr("127.0.0.6"), 64600)
	sp := newSpeaker(t)

	apply(t, sp, []speaker.Peer{a.peer(0), b.peer(64600)}, path("10.99.1.1/32"))

	gotA := a.waitRoutes(t, "10.99.1.1/32")
	gotB := b.waitRoutes(t, "10.99.1.1/32")

	require.Equal(t, fmt.Sprintf("{AsPath: %d}", nodeASN), gotA["10.99.1.1/32"])
	require.Equal(t, "{AsPath: 64600}", gotB["10.99.1.1/32"])
}

// Stopping the speaker is quiet: GoBGP's own Stop closes the sessions, and a
// second StopBgp before it made it log an error on every shutdown.
func TestStopLogsNoError(t *testing.T) {
	var logs bytes.Buffer

	sp := speaker.NewGoBGP(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

	_, err := sp.Apply(t.Context(), speaker.Desired{Global: speaker.Global{ASN: nodeASN, RouterID: netip.MustParseAddr("127.0.0.1")}})
	require.NoError(t, err)
	require.NoError(t, sp.Stop(t.Context()))

	require.NotContains(t, logs.String(), "level=ERROR")
	require.NotContains(t, logs.String(), "not running")
}
