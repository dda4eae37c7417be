// Package svcbgp announces the service IPs the controller pushes in BGP mode.
//
// For every pushed ServiceIP and each of its BGP announcements, the node
// announces when its name is in the announcement's node set (all eligible
// nodes, or for externalTrafficPolicy: Local only those with a ready local
// endpoint): it writes a BGPAdvertisement with the pushed rule's prefix
// length, communities, local preference and peers, which the bgp package's
// speaker announces. There is no election: every node in the set announces
// and the routers spread traffic over them (ECMP). A node leaving the set, or
// an IP no longer pushed, withdraws.
//
// A ServiceBGPStatus per IP and advertisement says whether this node
// announces and, if not, why (the node set's reason for this node). This
// package only writes resources: it never talks to the speaker or the kernel.
package svcbgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// OwnerPrefix starts the owner of every advertisement of a service IP: the
// owner is OwnerPrefix + the advertisement rule's name.
const OwnerPrefix = "service/"

// Controller turns pushed BGP-mode service IPs into BGP advertisements.
type Controller struct {
	// NodeName is this node, as the controller names it in node sets.
	NodeName string
}

// Name implements controller.Controller.
func (ctrl *Controller) Name() string {
	return "svcbgp.Controller"
}

// Inputs implements controller.Controller.
func (ctrl *Controller) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.ServiceNamespace, Type: resources.ServiceIPType, Kind: controller.InputWeak},
		{Namespace: resources.ServiceNamespace, Type: resources.NodeSetType, Kind: controller.InputWeak},
		{Namespace: resources.ServiceNamespace, Type: resources.BGPAdvertisementRuleType, Kind: controller.InputWeak},
		// Only to tell in the status whether the speaker took the prefix,
		// and whether this node has any of the peers it is meant for.
		{Namespace: resources.BGPNamespace, Type: resources.BGPRouteType, Kind: controller.InputWeak},
		{Namespace: resources.BGPNamespace, Type: resources.BGPPeerStatusType, Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *Controller) Outputs() []controller.Output {
	return []controller.Output{
		{Type: resources.BGPAdvertisementType, Kind: controller.OutputShared},
		{Type: resources.ServiceBGPStatusType, Kind: controller.OutputExclusive},
	}
}

// Run implements controller.Controller.
func (ctrl *Controller) Run(ctx context.Context, r controller.Runtime, _ *zap.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		}

		if err := ctrl.reconcile(ctx, r); err != nil {
			return err
		}
	}
}

// inputs are the pushed resources by name, the speaker's routes by prefix
// and the names of its peers.
type inputs struct {
	rules  map[string]*resourcepb.BgpAdvertisementRule
	sets   map[string]*resourcepb.NodeSet
	routes map[string]*resourcepb.BgpRouteSpec
	peers  map[string]bool
}

func (ctrl *Controller) read(ctx context.Context, r controller.Reader) (*inputs, error) {
	in := &inputs{
		rules:  map[string]*resourcepb.BgpAdvertisementRule{},
		sets:   map[string]*resourcepb.NodeSet{},
		routes: map[string]*resourcepb.BgpRouteSpec{},
		peers:  map[string]bool{},
	}

	rules, err := safe.ReaderListAll[*resources.BGPAdvertisementRule](ctx, r)
	if err != nil {
		return nil, fmt.Errorf("listing bgp advertisement rules: %w", err)
	}

	for rule := range rules.All() {
		in.rules[rule.Metadata().ID()] = rule.TypedSpec().Value
	}

	sets, err := safe.ReaderListAll[*resources.NodeSet](ctx, r)
	if err != nil {
		return nil, fmt.Errorf("listing node sets: %w", err)
	}

	for set := range sets.All() {
		in.sets[set.Metadata().ID()] = set.TypedSpec().Value
	}

	routes, err := safe.ReaderListAll[*resources.BGPRoute](ctx, r)
	if err != nil {
		return nil, fmt.Errorf("listing bgp routes: %w", err)
	}

	for route := range routes.All() {
		in.routes[route.Metadata().ID()] = route.TypedSpec().Value
	}

	peers, err := safe.ReaderListAll[*resources.BGPPeerStatus](ctx, r)
	if err != nil {
		return nil, fmt.Errorf("listing bgp peer statuses: %w", err)
	}

	for peer := range peers.All() {
		in.peers[peer.Metadata().ID()] = true
	}

	return in, nil
}

func (ctrl *Controller) reconcile(ctx context.Context, r controller.Runtime) error {
	in, err := ctrl.read(ctx, r)
	if err != nil {
		return err
	}

	ips, err := safe.ReaderListAll[*resources.ServiceIP](ctx, r)
	if err != nil {
		return fmt.Errorf("listing service IPs: %w", err)
	}

	r.StartTrackingOutputs()

	for sip := range ips.All() {
		spec := sip.TypedSpec().Value

		addr, err := netip.ParseAddr(spec.GetAddress())
		if err != nil {
			continue // the push handler refuses such a state
		}

		for _, b := range spec.GetBgp() {
			st := ctrl.decide(addr, spec, b, in)

			if st.GetAnnounced() {
				if err := ctrl.advertise(ctx, r, st); err != nil {
					return err
				}
			}

			if err := writeStatus(ctx, r, st); err != nil {
				return err
			}
		}
	}

	if err := r.CleanupOutputs(ctx, resources.NewBGPAdvertisement("").Metadata(), resources.NewServiceBGPStatus("").Metadata()); err != nil {
		return fmt.Errorf("cleaning up service advertisements: %w", err)
	}

	return nil
}

// decide says whether this node announces addr under announcement b, with what.
func (ctrl *Controller) decide(addr netip.Addr, sip *resourcepb.ServiceIPSpec, b *resourcepb.BgpAnnouncement, in *inputs) *resourcepb.ServiceBgpStatusSpec {
	st := &resourcepb.ServiceBgpStatusSpec{
		Address:       addr.String(),
		Advertisement: b.GetAdvertisement(),
		Services:      sip.GetServices(),
		NodeSet:       b.GetNodeSet(),
		Prefix:        netip.PrefixFrom(addr, addr.BitLen()).String(),
	}

	rule, ok := in.rules[b.GetAdvertisement()]
	if !ok {
		st.Reason = fmt.Sprintf("advertisement %s not pushed", b.GetAdvertisement())

		return st
	}

	st.Prefix = Prefix(addr, rule).String()
	st.Peers = rule.GetPeers()
	st.Communities, st.LargeCommunities, st.LocalPref = rule.GetCommunities(), rule.GetLargeCommunities(), rule.GetLocalPref()

	set, ok := in.sets[b.GetNodeSet()]

	switch {
	case !ok:
		st.Reason = fmt.Sprintf("node set %s not pushed", b.GetNodeSet())
	case slices.Contains(set.GetNodes(), ctrl.NodeName):
		st.Announced = true
	case set.GetExcluded()[ctrl.NodeName] != "":
		st.Reason = set.GetExcluded()[ctrl.NodeName]
	case set.GetDefaultReason() != "":
		st.Reason = set.GetDefaultReason()
	default:
		st.Reason = "not in node set " + b.GetNodeSet()
	}

	if st.GetAnnounced() {
		route, ok := in.routes[st.GetPrefix()]

		switch {
		case !ok:
			st.Error = "not yet taken by the BGP speaker"
		case route.GetLastError() != "":
			st.Error = route.GetLastError()
		case !route.GetAnnounced():
			st.Error = "not in the BGP speaker's table"
		case len(st.GetPeers()) > 0 && !slices.ContainsFunc(st.GetPeers(), func(p string) bool { return in.peers[p] }):
			st.Error = fmt.Sprintf("this node has none of the peers it goes to (%s)", strings.Join(st.GetPeers(), ", "))
		}
	}

	return st
}

// Prefix is what announces addr under rule: the host route, or the
// aggregate of the rule's aggregation length for the address family.
func Prefix(addr netip.Addr, rule *resourcepb.BgpAdvertisementRule) netip.Prefix {
	bits := int(rule.GetAggregationLength())
	if addr.Is6() {
		bits = int(rule.GetAggregationLengthV6())
	}

	if bits <= 0 || bits > addr.BitLen() {
		bits = addr.BitLen()
	}

	return netip.PrefixFrom(addr, bits).Masked()
}

// AdvertisementID is the ID of the BGPAdvertisement of prefix under an
// advertisement rule. IPs aggregated into one prefix share it.
func AdvertisementID(advertisement, prefix string) string {
	return OwnerPrefix + advertisement + "/" + prefix
}

func (ctrl *Controller) advertise(ctx context.Context, r controller.Runtime, st *resourcepb.ServiceBgpStatusSpec) error {
	id := AdvertisementID(st.GetAdvertisement(), st.GetPrefix())

	if err := safe.WriterModify(ctx, r, resources.NewBGPAdvertisement(id), func(a *resources.BGPAdvertisement) error {
		a.TypedSpec().Value = &resourcepb.BgpAdvertisementSpec{
			Prefix:           st.GetPrefix(),
			Owner:            OwnerPrefix + st.GetAdvertisement(),
			Communities:      st.GetCommunities(),
			LargeCommunities: st.GetLargeCommunities(),
			LocalPref:        st.GetLocalPref(),
			Peers:            st.GetPeers(),
		}

		return nil
	}); err != nil {
		return fmt.Errorf("writing bgp advertisement %s: %w", id, err)
	}

	return nil
}

// writeStatus publishes st, keeping since unless announced or reason changed.
func writeStatus(ctx context.Context, r controller.Runtime, st *resourcepb.ServiceBgpStatusSpec) error {
	id := resources.ServiceBGPStatusID(st.GetAddress(), st.GetAdvertisement())

	if err := safe.WriterModify(ctx, r, resources.NewServiceBGPStatus(id), func(res *resources.ServiceBGPStatus) error {
		old := res.TypedSpec().Value
		st.Since = old.GetSince()

		if st.Since == nil || old.GetAnnounced() != st.GetAnnounced() || old.GetReason() != st.GetReason() {
			st.Since = timestamppb.Now()
		}

		res.TypedSpec().Value = st

		return nil
	}); err != nil {
		return fmt.Errorf("writing service bgp status %s: %w", id, err)
	}

	return nil
}
