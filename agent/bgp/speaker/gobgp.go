package speaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// GoBGP is the Speaker on an embedded GoBGP server.
type GoBGP struct {
	log     *slog.Logger
	changes chan struct{}

	mu     sync.Mutex
	server *server.BgpServer
	global Global
	peers  map[netip.Addr]Peer
	paths  map[netip.Prefix]pathState
	// filters holds each peer's deny set as installed (see filter.go).
	filters map[netip.Addr]map[netip.Prefix]bool
	stopped bool
	// idleSince tracks sessions that sit idle: see reviveStuck.
	idleSince map[netip.Addr]time.Time
}

type pathState struct {
	path Path
	id   uuid.UUID
}

// NewGoBGP makes a speaker; nothing runs until the first Apply.
func NewGoBGP(log *slog.Logger) *GoBGP {
	return &GoBGP{log: log, changes: make(chan struct{}, 1)}
}

// Changes implements Speaker.
func (g *GoBGP) Changes() <-chan struct{} {
	return g.changes
}

func (g *GoBGP) signal() {
	select {
	case g.changes <- struct{}{}:
	default:
	}
}

// Apply implements Speaker.
func (g *GoBGP) Apply(ctx context.Context, d Desired) (Result, error) {
	g.mu.Lock()
	defer g.mu.Unlock()

	if g.stopped {
		return Result{}, errors.New("speaker stopped")
	}

	// Identity changes and stuck sessions need a new server; peers and paths are replayed below.
	if g.server != nil && (g.global != d.Global || g.stuck(ctx)) {
		g.stopServer()
	}

	if g.server == nil {
		if err := g.startServer(ctx, d.Global); err != nil {
			return Result{}, err
		}
	}

	peerErrs := map[string]error{}
	peers := g.uniquePeers(d.Peers, peerErrs)
	deny := denySets(peers, d.Paths)

	// Deny sets grow before the paths change and shrink after, so no path
	// ever reaches a peer it is not meant for, even for a moment.
	reset := g.tightenFilters(ctx, peers, deny, peerErrs)
	g.applyPeers(ctx, peers, deny, peerErrs)
	pathErrs := g.applyPaths(d.Paths)
	g.loosenFilters(ctx, peers, deny, reset, peerErrs)

	return Result{PeerErrors: peerErrs, PathErrors: pathErrs}, nil
}

// uniquePeers drops (and reports) a peer whose address an earlier one has:
// the speaker knows peers by address.
func (g *GoBGP) uniquePeers(want []Peer, errs map[string]error) []Peer {
	seen := map[netip.Addr]string{}
	out := make([]Peer, 0, len(want))

	for _, p := range want {
		if other, ok := seen[p.Address]; ok {
			errs[p.Name] = fmt.Errorf("address %s is also peer %s's", p.Address, other)

			continue
		}

		seen[p.Address] = p.Name
		out = append(out, p)
	}

	return out
}

// tightenFilters grows the deny sets of running peers. A peer whose filter
// cannot be set is stopped rather than sent what is not meant for it.
func (g *GoBGP) tightenFilters(ctx context.Context, peers []Peer, deny map[netip.Addr]map[netip.Prefix]bool, errs map[string]error) map[netip.Addr]bool {
	reset := map[netip.Addr]bool{}

	for _, p := range peers {
		if _, ok := g.filters[p.Address]; !ok {
			continue // a new peer gets its filter before it is added
		}

		r, err := g.tighten(ctx, p.Address, deny[p.Address])
		if err != nil {
			errs[p.Name] = err
			g.dropPeer(ctx, p.Address)

			continue
		}

		reset[p.Address] = r
	}

	return reset
}

// loosenFilters shrinks the deny sets of running peers, removes the filters
// of peers gone, and re-sends their routes to peers whose filter changed.
func (g *GoBGP) loosenFilters(ctx context.Context, peers []Peer, deny map[netip.Addr]map[netip.Prefix]bool, reset map[netip.Addr]bool, errs map[string]error) {
	names := map[netip.Addr]string{}
	for _, p := range peers {
		names[p.Address] = p.Name
	}

	for a := range g.filters {
		if _, running := g.peers[a]; !running {
			if err := g.removeFilter(ctx, a); err != nil {
				g.log.Warn("removing a peer filter", slog.String("error", err.Error()))
			}

			continue
		}

		r, err := g.loosen(ctx, a, deny[a])
		if err != nil {
			errs[names[a]] = err

			continue
		}

		if r || reset[a] {
			if err := g.softResetOut(ctx, a); err != nil {
				errs[names[a]] = err
			}
		}
	}
}

// dropPeer stops a running peer.
func (g *GoBGP) dropPeer(ctx context.Context, a netip.Addr) {
	if _, ok := g.peers[a]; !ok {
		return
	}

	if err := g.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
		g.log.Warn("stopping a peer", slog.String("peer", a.String()), slog.String("error", err.Error()))

		return
	}

	delete(g.peers, a)
}

func (g *GoBGP) startServer(ctx context.Context, gl Global) error {
	level := &slog.LevelVar{}
	level.Set(slog.LevelWarn)

	s := server.NewBgpServer(server.LoggerOption(g.log, level))
	go s.Serve()

	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        gl.ASN,
		RouterId:   gl.RouterID.String(),
		ListenPort: listenPort(gl.ListenPort),
	}}); err != nil {
		s.Stop()

		return fmt.Errorf("starting BGP (asn %d, router ID %s): %w", gl.ASN, gl.RouterID, err)
	}

	// Nothing learned from a router is ever used: this speaker only announces.
	// GoBGP's global import policy also filters locally added paths, so those
	// are accepted by a statement and everything else falls to the default.
	localOnly := &api.Policy{Name: "talos-lb-local-only", Statements: []*api.Statement{{
		Name:       "accept-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}}

	if err := s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: localOnly}); err != nil {
		s.Stop()

		return fmt.Errorf("defining the import policy: %w", err)
	}

	if err := s.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies:      []*api.Policy{{Name: localOnly.GetName()}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}}); err != nil {
		s.Stop()

		return fmt.Errorf("setting the import policy: %w", err)
	}

	if err := s.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: func(*apiutil.WatchEventMessage_PeerEvent, time.Time) { g.signal() },
	}, server.WatchPeer()); err != nil {
		s.Stop()

		return fmt.Errorf("watching peers: %w", err)
	}

	g.server, g.global = s, gl
	g.peers, g.paths = map[netip.Addr]Peer{}, map[netip.Prefix]pathState{}
	g.filters = map[netip.Addr]map[netip.Prefix]bool{}
	g.idleSince = map[netip.Addr]time.Time{}

	return nil
}

// listenPort maps "no listener" (0 in our config) to GoBGP's -1 (its 0 means 179).
func listenPort(p int32) int32 {
	if p == 0 {
		return -1
	}

	return p
}

// stopServer closes every session (with a Cease) and stops BFD. GoBGP's
// Stop does both; calling StopBgp first made it log "failed to stop BGP
// server: not running" on every shutdown.
func (g *GoBGP) stopServer() {
	g.server.Stop()
	g.server = nil
}

func (g *GoBGP) applyPeers(ctx context.Context, want []Peer, deny map[netip.Addr]map[netip.Prefix]bool, errs map[string]error) {
	wanted := map[netip.Addr]bool{}

	for _, p := range want {
		if errs[p.Name] != nil {
			continue // its filter failed: it stays stopped
		}

		wanted[p.Address] = true

		if cur, ok := g.peers[p.Address]; ok && reflect.DeepEqual(cur, p) {
			continue
		}

		if _, ok := g.peers[p.Address]; ok {
			// Changing transport, timers or password needs a new session anyway.
			if err := g.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()}); err != nil {
				errs[p.Name] = fmt.Errorf("replacing peer %s: %w", p.Name, err)

				continue
			}

			delete(g.peers, p.Address)
		}

		if _, ok := g.filters[p.Address]; !ok {
			if err := g.addFilter(ctx, p.Address, deny[p.Address]); err != nil {
				errs[p.Name] = fmt.Errorf("peer %s (%s): its export filter: %w", p.Name, p.Address, err)

				continue
			}
		}

		if err := g.server.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			errs[p.Name] = fmt.Errorf("adding peer %s (%s): %w", p.Name, p.Address, err)

			continue
		}

		g.peers[p.Address] = p
	}

	for addr, p := range g.peers {
		if wanted[addr] {
			continue
		}

		if err := g.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs[p.Name] = fmt.Errorf("removing peer %s: %w", p.Name, err)

			continue
		}

		delete(g.peers, addr)
	}
}

func apiPeer(p Peer) *api.Peer {
	family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if p.Address.Is6() {
		family.Afi = api.Family_AFI_IP6
	}

	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(), PeerAsn: p.ASN, LocalAsn: p.LocalASN,
			AuthPassword: p.Password, Description: p.Name,
		},
		Transport: &api.Transport{
			LocalAddress: p.LocalAddress.String(),
			RemotePort:   p.Port,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(p.HoldTime.Seconds()),
			KeepaliveInterval: uint64(p.Keepalive.Seconds()),
			ConnectRetry:      1,
		}},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: family, Enabled: true}}},
	}

	if p.Multihop > 0 {
		peer.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: p.Multihop}
	}

	if p.BFD != nil {
		peer.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: uint32(p.BFD.MinTx.Microseconds()), //nolint:gosec // validated to at most 10 s
			RequiredMinimumReceive:   uint32(p.BFD.MinRx.Microseconds()), //nolint:gosec // validated to at most 10 s
			DetectionMultiplier:      p.BFD.Multiplier,
		}
	}

	if p.RestartTime > 0 {
		peer.GracefulRestart = gracefulRestart(p.RestartTime)
		// Routers keep routes over a restart only for the families listed in
		// the capability; GoBGP lists those whose MpGracefulRestart is on.
		peer.AfiSafis[0].MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}

	return peer
}

// gracefulRestart is a peer's graceful restart (RFC 4724) as the restarting
// side. A peer the speaker adds says "restarted, forwarding state kept" (the
// R and F bits) in its first OPEN: the node's forwarding (VIPs on lo, the
// kernel) outlives the agent, and a new process cannot tell a restart from a
// first start. Without F, RFC 4724 has the router delete the stale routes the
// moment the session is back, before the node re-announces them. While
// "restarting" GoBGP sends nothing until every graceful-restart router has
// sent End-of-RIB or the deferral timer (default 360 s) runs out: this
// speaker learns nothing, so it waits at most 1 s for a router that is down.
func gracefulRestart(restart time.Duration) *api.GracefulRestart {
	return &api.GracefulRestart{
		Enabled:         true,
		RestartTime:     uint32(restart.Seconds()), // validated to at most 4095 s
		LocalRestarting: true,
		DeferralTime:    1,
	}
}

func (g *GoBGP) applyPaths(want []Path) map[netip.Prefix]error {
	wanted := map[netip.Prefix]Path{}
	for _, p := range want {
		wanted[p.Prefix] = p
	}

	errs := map[netip.Prefix]error{}

	for prefix, st := range g.paths {
		if _, ok := wanted[prefix]; ok {
			continue
		}

		if err := g.server.DeletePath(apiutil.DeletePathRequest{UUIDs: []uuid.UUID{st.id}}); err != nil {
			errs[prefix] = fmt.Errorf("withdrawing: %w", err)

			continue
		}

		delete(g.paths, prefix)
	}

	for prefix, p := range wanted {
		if st, ok := g.paths[prefix]; ok && sameAttributes(st.path, p) {
			// Only its peers may differ: the filters take care of those.
			g.paths[prefix] = pathState{path: p, id: st.id}

			continue
		}

		// Announcing a prefix again with new attributes replaces the old path.
		path, err := apiPath(p)
		if err != nil {
			errs[prefix] = err

			continue
		}

		resp, err := g.server.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
		if err != nil {
			errs[prefix] = fmt.Errorf("announcing: %w", err)

			continue
		}

		g.paths[prefix] = pathState{path: p, id: resp[0].UUID}
	}

	return errs
}

// sameAttributes says two paths announce the same thing, whatever their peers.
func sameAttributes(a, b Path) bool {
	a.Peers, b.Peers = nil, nil

	return reflect.DeepEqual(a, b)
}

func apiPath(p Path) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p.Prefix)
	if err != nil {
		return nil, fmt.Errorf("prefix %s: %w", p.Prefix, err)
	}

	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	family := bgp.RF_IPv4_UC

	// An unspecified next hop becomes the session's local address for every peer.
	if p.Prefix.Addr().Is4() {
		nh, err := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return nil, err
		}

		attrs = append(attrs, nh)
	} else {
		family = bgp.RF_IPv6_UC

		mp, err := bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, err
		}

		attrs = append(attrs, mp)
	}

	if len(p.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(p.Communities))
	}

	if len(p.LargeCommunities) > 0 {
		large := make([]*bgp.LargeCommunity, 0, len(p.LargeCommunities))
		for _, l := range p.LargeCommunities {
			large = append(large, bgp.NewLargeCommunity(l[0], l[1], l[2]))
		}

		attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(large))
	}

	if p.LocalPref > 0 {
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(p.LocalPref))
	}

	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs}, nil
}

// Peers implements Speaker.
func (g *GoBGP) Peers(ctx context.Context) ([]PeerState, error) {
	g.mu.Lock()
	s := g.server
	g.mu.Unlock()

	if s == nil {
		return nil, nil
	}

	bfd := map[string]string{}
	s.ListBfdPeer(ctx, func(addr string, st *api.BfdPeerState) {
		bfd[addr] = strings.ToLower(strings.TrimPrefix(st.GetSessionState().String(), "BFD_SESSION_STATE_"))
	})

	var out []PeerState

	err := s.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}

		st := PeerState{
			Address:  addr,
			State:    strings.ToLower(strings.TrimPrefix(p.GetState().GetSessionState().String(), "SESSION_STATE_")),
			BFDState: bfd[addr.String()],
		}

		if up := p.GetTimers().GetState().GetUptime(); up != nil && st.State == "established" {
			st.Since = up.AsTime()
		}

		for _, af := range p.GetAfiSafis() {
			st.PrefixesSent += af.GetState().GetAdvertised()
			st.PrefixesReceived += af.GetState().GetReceived()
		}

		out = append(out, st)
	})
	if err != nil {
		return nil, fmt.Errorf("listing BGP peers: %w", err)
	}

	return out, nil
}

// Stop implements Speaker.
func (g *GoBGP) Stop(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()

	g.stopped = true

	if g.server != nil {
		g.stopServer()
	}

	return nil
}

// stuckAfter is how long a session may sit idle before it is re-created;
// GoBGP itself idles 5 s after a session drops.
const stuckAfter = 10 * time.Second

// stuck says the speaker must restart: a session has sat idle for stuckAfter. GoBGP v4.8's BFD can reset a session as it comes back after a
// freeze (its BFD state is still "down" from before) and then never retry;
// re-creating the peer alone was not enough in the lab, a fresh server
// (as after an agent restart) is.
func (g *GoBGP) stuck(ctx context.Context) bool {
	now := time.Now()

	err := g.server.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}

		if p.GetState().GetSessionState() != api.PeerState_SESSION_STATE_IDLE {
			delete(g.idleSince, addr)

			return
		}

		if _, ok := g.idleSince[addr]; !ok {
			g.idleSince[addr] = now
		}
	})
	if err != nil {
		return false
	}

	for addr, since := range g.idleSince {
		peer, ok := g.peers[addr]
		if !ok || now.Sub(since) < stuckAfter {
			continue
		}

		g.log.Warn("BGP session stuck idle, restarting the speaker", slog.String("peer", peer.Name), slog.Duration("idle", now.Sub(since)))

		return true
	}

	return false
}
