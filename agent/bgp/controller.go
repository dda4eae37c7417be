// Package bgp turns the BGP config, the peers pushed by the controller and
// every BGPAdvertisement into the embedded speaker's peers and paths, and
// publishes what the speaker does: BGPPeerStatus per router, BGPRoute per
// prefix. Several owners may advertise one prefix (ref-counted): it is
// announced once, and withdrawn when the last owner goes. On shutdown the
// speaker sends Cease so routers withdraw at once.
//
// Peers come from two places: the agent config's bgp section and the
// controller's pushes (PushedBGPPeer). Both run side by side; a config peer
// wins over a pushed one of the same name or address. The speaker runs as
// soon as either has a peer: its AS is the config's, else the lowest local
// ASN of the pushed peers, and every pushed peer speaks as its own local ASN.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/talos-lb/talos-lb/agent/bgp/speaker"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/community"
	"github.com/talos-lb/talos-lb/pkg/netutil"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Host answers what the speaker needs to know about this node.
type Host interface {
	// SourceFor is the local address the kernel uses toward dst.
	SourceFor(dst netip.Addr) (netip.Addr, error)
	// Addresses are the node's addresses, for a default router ID.
	Addresses() ([]netip.Prefix, error)
}

// NetlinkHost is the real Host.
type NetlinkHost struct{}

// SourceFor implements Host.
func (NetlinkHost) SourceFor(dst netip.Addr) (netip.Addr, error) { return netutil.SourceFor(dst) }

// Addresses implements Host.
func (NetlinkHost) Addresses() ([]netip.Prefix, error) { return netutil.NetlinkAddresses{}.Addresses() }

// Controller runs the speaker.
type Controller struct {
	Speaker speaker.Speaker
	Host    Host
	// NodeName seeds the router ID of a node without IPv4.
	NodeName string

	// ran says the speaker was applied once, with lastGlobal.
	ran        bool
	lastGlobal speaker.Global
}

// Name implements controller.Controller.
func (ctrl *Controller) Name() string {
	return "bgp.Controller"
}

// Inputs implements controller.Controller.
func (ctrl *Controller) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.BGPNamespace, Type: resources.BGPConfigType, ID: optional.Some(resources.BGPConfigID), Kind: controller.InputWeak},
		{Namespace: resources.BGPNamespace, Type: resources.BGPAdvertisementType, Kind: controller.InputWeak},
		{Namespace: resources.BGPNamespace, Type: resources.PushedBGPPeerType, Kind: controller.InputWeak},
		{Namespace: resources.AgentNamespace, Type: resources.AgentLifecycleType, ID: optional.Some(resources.AgentLifecycleID), Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *Controller) Outputs() []controller.Output {
	return []controller.Output{
		{Type: resources.BGPPeerStatusType, Kind: controller.OutputExclusive},
		{Type: resources.BGPRouteType, Kind: controller.OutputExclusive},
	}
}

// Run implements controller.Controller.
func (ctrl *Controller) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	stopped := false

	defer func() {
		if !stopped {
			stopCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()

			ctrl.cease(stopCtx, logger)
		}
	}()

	// Session counters change without any event of ours.
	ticker := time.NewTicker(5 * time.Second)
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-ctrl.Speaker.Changes():
		case <-ticker.C:
		}

		if stopped {
			continue
		}

		var err error

		stopped, err = ctrl.reconcile(ctx, r, logger)
		if err != nil {
			return err
		}
	}
}

func (ctrl *Controller) reconcile(ctx context.Context, r controller.Runtime, logger *zap.Logger) (stopped bool, err error) {
	cfg, err := safe.ReaderGetByID[*resources.BGPConfig](ctx, r, resources.BGPConfigID)
	if err != nil && !state.IsNotFoundError(err) {
		return false, fmt.Errorf("reading bgp config: %w", err)
	}

	lifecycle, err := safe.ReaderGetByID[*resources.AgentLifecycle](ctx, r, resources.AgentLifecycleID)
	if err != nil && !state.IsNotFoundError(err) {
		return false, fmt.Errorf("reading agent lifecycle: %w", err)
	}

	if lifecycle != nil && lifecycle.TypedSpec().Value.GetShuttingDown() {
		ctrl.cease(ctx, logger)

		return true, nil
	}

	pushed, err := safe.ReaderListAll[*resources.PushedBGPPeer](ctx, r)
	if err != nil {
		return false, fmt.Errorf("listing pushed bgp peers: %w", err)
	}

	var pushedPeers []*resourcepb.PushedBgpPeer
	for p := range pushed.All() {
		pushedPeers = append(pushedPeers, p.TypedSpec().Value)
	}

	r.StartTrackingOutputs()

	var cfgSpec *resourcepb.BgpConfigSpec
	if cfg != nil {
		cfgSpec = cfg.TypedSpec().Value
	}

	if err := ctrl.apply(ctx, r, logger, cfgSpec, pushedPeers); err != nil {
		return false, err
	}

	if err := r.CleanupOutputs(ctx, resources.NewBGPPeerStatus("").Metadata(), resources.NewBGPRoute("").Metadata()); err != nil {
		return false, fmt.Errorf("cleaning up bgp status: %w", err)
	}

	return false, nil
}

// Sources of a peer, as BGPPeerStatus says.
const (
	SourceConfig     = "config"
	SourceController = "controller"
)

// peerEntry is one peer to run, from the config or pushed.
type peerEntry struct {
	spec     *resourcepb.BgpPeerSpec
	source   string
	localASN uint32
	note     string
	err      error
}

// peers lists the config's peers, then the pushed ones by name. A pushed
// peer whose name or address a config peer has is left out (the config wins)
// and both say so.
func peers(cfg *resourcepb.BgpConfigSpec, pushed []*resourcepb.PushedBgpPeer) []*peerEntry {
	var out []*peerEntry

	byName := map[string]*peerEntry{}
	byAddr := map[string]*peerEntry{}

	for _, p := range cfg.GetPeers() {
		e := &peerEntry{spec: p, source: SourceConfig, localASN: cfg.GetAsn()}
		out = append(out, e)
		byName[p.GetName()] = e
		byAddr[canonical(p.GetAddress())] = e
	}

	slices.SortFunc(pushed, func(a, b *resourcepb.PushedBgpPeer) int {
		return strings.Compare(a.GetPeer().GetName(), b.GetPeer().GetName())
	})

	for _, p := range pushed {
		spec := p.GetPeer()

		if e, ok := byName[spec.GetName()]; ok {
			e.note = "the controller pushes a peer of the same name (" + spec.GetAddress() + "); the agent config's wins"

			continue
		}

		e := &peerEntry{spec: spec, source: SourceController, localASN: p.GetLocalAsn()}
		if e.localASN == 0 {
			e.localASN = cfg.GetAsn()
		}

		switch other, dup := byAddr[canonical(spec.GetAddress())]; {
		case dup && other.source == SourceConfig:
			e.err = fmt.Errorf("address %s is config peer %s's: the agent config wins", spec.GetAddress(), other.spec.GetName())
			other.note = "the controller pushes peer " + spec.GetName() + " with the same address; the agent config wins"
		case dup:
			e.err = fmt.Errorf("address %s is pushed peer %s's too", spec.GetAddress(), other.spec.GetName())
		case e.localASN == 0:
			e.err = errors.New("no local ASN: the push names none and the agent config has no bgp.asn")
		default:
			byAddr[canonical(spec.GetAddress())] = e
		}

		out = append(out, e)
	}

	return out
}

func canonical(addr string) string {
	if a, err := netip.ParseAddr(addr); err == nil {
		return a.String()
	}

	return addr
}

// global is the speaker's AS: the config's, else the lowest local ASN of the
// running pushed peers (each pushed peer speaks as its own local ASN anyway).
func global(cfg *resourcepb.BgpConfigSpec, entries []*peerEntry) uint32 {
	if cfg.GetAsn() != 0 {
		return cfg.GetAsn()
	}

	var asn uint32

	for _, e := range entries {
		if e.err == nil && e.localASN != 0 && (asn == 0 || e.localASN < asn) {
			asn = e.localASN
		}
	}

	return asn
}

func (ctrl *Controller) apply(ctx context.Context, r controller.Runtime, logger *zap.Logger, cfg *resourcepb.BgpConfigSpec, pushed []*resourcepb.PushedBgpPeer) error {
	entries := peers(cfg, pushed)

	routes, paths, err := ctrl.routes(ctx, r)
	if err != nil {
		return err
	}

	if len(entries) == 0 && cfg == nil {
		// Nothing to speak to. A speaker that ran keeps running, without
		// peers or paths, so sessions close and routes are withdrawn.
		if ctrl.ran {
			if _, err := ctrl.Speaker.Apply(ctx, speaker.Desired{Global: ctrl.lastGlobal}); err != nil {
				logger.Warn("BGP speaker", zap.Error(err))
			}
		}

		return ctrl.writeRoutes(ctx, r, routes, speaker.Result{}, errors.New("no BGP peer: the agent config has no bgp section and the controller pushes no peer"))
	}

	routerID, err := ctrl.routerID(cfg)
	if err != nil {
		return err
	}

	var sps []speaker.Peer

	for _, e := range entries {
		if e.err != nil {
			continue
		}

		sp, err := ctrl.peer(e.spec)
		if err != nil {
			e.err = err

			continue
		}

		sp.LocalASN = e.localASN
		sps = append(sps, sp)
	}

	g := speaker.Global{ASN: global(cfg, entries), RouterID: routerID, ListenPort: int32(cfg.GetListenPort())} //nolint:gosec // validated to a port

	res, applyErr := ctrl.Speaker.Apply(ctx, speaker.Desired{Global: g, Peers: sps, Paths: paths})
	if applyErr == nil {
		ctrl.ran, ctrl.lastGlobal = true, g
	}

	for _, e := range entries {
		if err := res.PeerErrors[e.spec.GetName()]; err != nil {
			e.err = err
		}

		if e.err != nil {
			logger.Warn("BGP peer not running", zap.String("peer", e.spec.GetName()), zap.String("source", e.source), zap.Error(e.err))
		}
	}

	if applyErr != nil {
		logger.Warn("BGP speaker", zap.Error(applyErr))
	}

	if err := ctrl.writeRoutes(ctx, r, routes, res, applyErr); err != nil {
		return err
	}

	return ctrl.writePeers(ctx, r, entries)
}

func (ctrl *Controller) writeRoutes(ctx context.Context, r controller.Runtime, routes map[string]*resourcepb.BgpRouteSpec, res speaker.Result, applyErr error) error {
	for prefix, route := range routes {
		switch pathErr := res.PathErrors[netip.MustParsePrefix(prefix)]; {
		case route.GetLastError() != "":
		case applyErr != nil:
			route.LastError = applyErr.Error()
		case pathErr != nil:
			route.LastError = pathErr.Error()
		default:
			route.Announced = true
		}

		if err := safe.WriterModify(ctx, r, resources.NewBGPRoute(prefix), func(res *resources.BGPRoute) error {
			res.TypedSpec().Value = route

			return nil
		}); err != nil {
			return fmt.Errorf("writing bgp route %s: %w", prefix, err)
		}
	}

	return nil
}

func (ctrl *Controller) writePeers(ctx context.Context, r controller.Runtime, entries []*peerEntry) error {
	states, err := ctrl.Speaker.Peers(ctx)
	if err != nil {
		return err
	}

	for _, e := range entries {
		p := e.spec
		addr, _ := netip.ParseAddr(p.GetAddress()) //nolint:errcheck // validated by the config parser and the push

		var st speaker.PeerState

		if e.err == nil {
			for _, s := range states {
				if s.Address == addr {
					st = s
				}
			}
		}

		if err := safe.WriterModify(ctx, r, resources.NewBGPPeerStatus(p.GetName()), func(res *resources.BGPPeerStatus) error {
			s := res.TypedSpec().Value
			s.Name, s.Address, s.Asn, s.LocalAddress = p.GetName(), p.GetAddress(), p.GetAsn(), p.GetLocalAddress()
			s.Source, s.LocalAsn, s.Note = e.source, e.localASN, e.note
			s.State, s.BfdState = st.State, st.BFDState
			s.PrefixesSent, s.PrefixesReceived = st.PrefixesSent, st.PrefixesReceived
			s.Since = nil

			if !st.Since.IsZero() {
				s.Since = timestamppb.New(st.Since)
			}

			s.LastError = ""
			if e.err != nil {
				s.LastError = e.err.Error()
				s.State = "not running"
			}

			return nil
		}); err != nil {
			return fmt.Errorf("writing bgp peer status %s: %w", p.GetName(), err)
		}
	}

	return nil
}

// routes merges every advertisement by prefix: owners and communities are
// united, the highest local preference wins.
func (ctrl *Controller) routes(ctx context.Context, r controller.Reader) (map[string]*resourcepb.BgpRouteSpec, []speaker.Path, error) {
	ads, err := safe.ReaderListAll[*resources.BGPAdvertisement](ctx, r)
	if err != nil {
		return nil, nil, fmt.Errorf("listing bgp advertisements: %w", err)
	}

	routes := map[string]*resourcepb.BgpRouteSpec{}

	for ad := range ads.All() {
		a := ad.TypedSpec().Value

		prefix, err := netip.ParsePrefix(a.GetPrefix())
		if err != nil {
			continue
		}

		key := prefix.Masked().String()

		rt, ok := routes[key]
		if !ok {
			rt = &resourcepb.BgpRouteSpec{Prefix: key}
			routes[key] = rt
		}

		// Peers: the union of what the advertisements name; one naming
		// none wants every peer, so the route goes to every peer.
		switch {
		case !ok:
			rt.Peers = appendSorted(nil, a.GetPeers()...)
		case len(rt.Peers) > 0 && len(a.GetPeers()) > 0:
			rt.Peers = appendSorted(rt.Peers, a.GetPeers()...)
		default:
			rt.Peers = nil
		}

		rt.Owners = appendSorted(rt.Owners, a.GetOwner())
		rt.Communities = appendSorted(rt.Communities, a.GetCommunities()...)
		rt.LargeCommunities = appendSorted(rt.LargeCommunities, a.GetLargeCommunities()...)
		rt.LocalPref = max(rt.LocalPref, a.GetLocalPref())
	}

	paths := make([]speaker.Path, 0, len(routes))

	for key, rt := range routes {
		p, err := path(key, rt)
		if err != nil {
			rt.LastError = err.Error()

			continue
		}

		paths = append(paths, p)
	}

	return routes, paths, nil
}

func path(key string, rt *resourcepb.BgpRouteSpec) (speaker.Path, error) {
	p := speaker.Path{Prefix: netip.MustParsePrefix(key), LocalPref: rt.GetLocalPref(), Peers: rt.GetPeers()}

	var errs []error

	for _, c := range rt.GetCommunities() {
		v, err := community.Parse(c)
		errs = append(errs, err)
		p.Communities = append(p.Communities, v)
	}

	for _, c := range rt.GetLargeCommunities() {
		v, err := community.ParseLarge(c)
		errs = append(errs, err)
		p.LargeCommunities = append(p.LargeCommunities, v)
	}

	return p, errors.Join(errs...)
}

func appendSorted(list []string, values ...string) []string {
	for _, v := range values {
		if !slices.Contains(list, v) {
			list = append(list, v)
		}
	}

	slices.Sort(list)

	return list
}

func (ctrl *Controller) peer(p *resourcepb.BgpPeerSpec) (speaker.Peer, error) {
	addr, err := netip.ParseAddr(p.GetAddress())
	if err != nil {
		return speaker.Peer{}, fmt.Errorf("address: %w", err)
	}

	sp := speaker.Peer{
		Name: p.GetName(), Address: addr, Port: p.GetPort(), ASN: p.GetAsn(),
		HoldTime: p.GetHoldTime().AsDuration(), Keepalive: p.GetKeepalive().AsDuration(),
		Multihop: p.GetMultihop(),
	}

	// The session's source is the announced next hop: pin it, or another
	// address on the link (a VIP) could become it.
	if p.GetLocalAddress() != "" {
		sp.LocalAddress, err = netip.ParseAddr(p.GetLocalAddress())
	} else {
		sp.LocalAddress, err = ctrl.Host.SourceFor(addr)
	}

	if err != nil {
		return speaker.Peer{}, fmt.Errorf("local address: %w", err)
	}

	if f := p.GetPasswordFile(); f != "" {
		pw, err := os.ReadFile(f)
		if err != nil {
			return speaker.Peer{}, fmt.Errorf("passwordFile: %w", err)
		}

		sp.Password = strings.TrimSpace(string(pw))
	}

	if p.GetBfd() {
		sp.BFD = &speaker.BFD{MinTx: p.GetBfdMinTx().AsDuration(), MinRx: p.GetBfdMinRx().AsDuration(), Multiplier: p.GetBfdMultiplier()}
	}

	if p.GetGracefulRestart() {
		sp.RestartTime = p.GetRestartTime().AsDuration()
	}

	return sp, nil
}

// routerID is the configured one, else the node's first IPv4, else one
// derived from the node name (a router ID must be IPv4, also on IPv6-only nodes).
func (ctrl *Controller) routerID(cfg *resourcepb.BgpConfigSpec) (netip.Addr, error) {
	if id := cfg.GetRouterId(); id != "" {
		return netip.ParseAddr(id)
	}

	addrs, err := ctrl.Host.Addresses()
	if err != nil {
		return netip.Addr{}, err
	}

	for _, a := range addrs {
		if a.Addr().Is4() {
			return a.Addr(), nil
		}
	}

	h := fnv.New32a()
	h.Write([]byte(ctrl.NodeName)) //nolint:errcheck // hashes never fail

	sum := h.Sum32() | 1 // never 0.0.0.0

	return netip.AddrFrom4([4]byte{byte(sum >> 24), byte(sum >> 16), byte(sum >> 8), byte(sum)}), nil
}

// cease closes every session with a Cease notification, so routers withdraw
// this node's routes at once instead of waiting for the hold time.
func (ctrl *Controller) cease(ctx context.Context, logger *zap.Logger) {
	start := time.Now()

	if err := ctrl.Speaker.Stop(ctx); err != nil {
		logger.Warn("stopping the BGP speaker", zap.Error(err))

		return
	}

	logger.Info("BGP sessions closed with Cease", zap.Duration("took", time.Since(start)))
}
