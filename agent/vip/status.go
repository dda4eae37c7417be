// Package vip decides which control-plane VIPs this node holds and puts them
// on the wire. StatusController turns the election, the local API server's
// health and the link's state into one VIPStatus per address, with the reason
// when it does not hold; AddressController adds and removes the addresses
// and announces them. Neither runs the election (package election does).
package vip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/netutil"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// StatusController writes VIPStatus.
type StatusController struct {
	Links netutil.Links
	// Changes says when the host's addresses or links may have changed.
	Changes netutil.AddressSource
}

// Name implements controller.Controller.
func (ctrl *StatusController) Name() string {
	return "vip.StatusController"
}

// Inputs implements controller.Controller.
func (ctrl *StatusController) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.VIPNamespace, Type: resources.VIPConfigType, ID: optional.Some(resources.ControlPlaneID), Kind: controller.InputWeak},
		{Namespace: resources.VIPNamespace, Type: resources.VIPLeadershipType, ID: optional.Some(resources.ControlPlaneID), Kind: controller.InputWeak},
		{Namespace: resources.VIPNamespace, Type: resources.ManagedAddressType, Kind: controller.InputWeak},
		{Namespace: resources.AgentNamespace, Type: resources.EndpointHealthType, Kind: controller.InputWeak},
		{Namespace: resources.AgentNamespace, Type: resources.AgentLifecycleType, ID: optional.Some(resources.AgentLifecycleID), Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *StatusController) Outputs() []controller.Output {
	return []controller.Output{{Type: resources.VIPStatusType, Kind: controller.OutputExclusive}}
}

// Run implements controller.Controller.
func (ctrl *StatusController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	changed := make(chan struct{}, 1)

	go func() {
		if err := ctrl.Changes.Watch(ctx, changed); err != nil {
			logger.Warn("not watching address changes", zap.Error(err))
		}
	}()

	reported := map[string]string{}

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-changed:
		}

		if err := ctrl.reconcile(ctx, r, logger, reported); err != nil {
			return err
		}
	}
}

func (ctrl *StatusController) reconcile(ctx context.Context, r controller.Runtime, logger *zap.Logger, reported map[string]string) error {
	r.StartTrackingOutputs()

	cfg, err := safe.ReaderGetByID[*resources.VIPConfig](ctx, r, resources.ControlPlaneID)
	if err != nil && !state.IsNotFoundError(err) {
		return fmt.Errorf("reading vip config: %w", err)
	}

	if cfg != nil {
		spec := cfg.TypedSpec().Value

		common, err := ctrl.commonReason(ctx, r, spec)
		if err != nil {
			return err
		}

		managed, err := safe.ReaderListAll[*resources.ManagedAddress](ctx, r)
		if err != nil {
			return fmt.Errorf("listing managed addresses: %w", err)
		}

		linkAddrs, linkErr := ctrl.Links.Addresses(spec.GetLink())

		for _, a := range spec.GetAddresses() {
			reason := common
			if problem := addressProblem(a, spec.GetLink(), spec.GetMode() == "bgp", linkAddrs, linkErr, managed); problem != "" {
				reason = problem

				if reported[a] != problem {
					logger.Error("VIP cannot be held", zap.String("vip", a), zap.String("problem", problem))
				}
			}

			reported[a] = reason

			if err := write(ctx, r, a, spec.GetLink(), reason); err != nil {
				return err
			}
		}
	}

	if err := r.CleanupOutputs(ctx, resources.NewVIPStatus("").Metadata()); err != nil {
		return fmt.Errorf("cleaning up vip status: %w", err)
	}

	return nil
}

// commonReason is why this node holds none of the VIPs, or "" when it may hold them.
func (ctrl *StatusController) commonReason(ctx context.Context, r controller.Reader, spec *resourcepb.VipConfigSpec) (string, error) {
	if spec.GetMode() == "bgp" {
		return bgpReason(ctx, r, spec)
	}

	lead, err := safe.ReaderGetByID[*resources.VIPLeadership](ctx, r, resources.ControlPlaneID)
	if err != nil && !state.IsNotFoundError(err) {
		return "", fmt.Errorf("reading vip leadership: %w", err)
	}

	if lead == nil {
		return "election not running", nil
	}

	l := lead.TypedSpec().Value

	switch {
	case l.GetLastError() != "" && l.GetState() == "stopped":
		return "election not running: " + l.GetLastError(), nil
	case l.GetSteppingDown():
		return "agent shutting down", nil
	case l.GetLeader() == "":
		return "no quorum", nil
	case l.GetState() != "Leader" || l.GetLeader() != spec.GetNodeName():
		return fmt.Sprintf("not leader (%s is)", l.GetLeader()), nil
	case !l.GetSettled():
		return "taking over: waiting out any previous leader's lease", nil
	}

	return healthReason(ctx, r, spec.GetHealthCheck())
}

// bgpReason: in BGP mode every healthy node holds and announces the VIP.
func bgpReason(ctx context.Context, r controller.Reader, spec *resourcepb.VipConfigSpec) (string, error) {
	lifecycle, err := safe.ReaderGetByID[*resources.AgentLifecycle](ctx, r, resources.AgentLifecycleID)
	if err != nil && !state.IsNotFoundError(err) {
		return "", fmt.Errorf("reading agent lifecycle: %w", err)
	}

	if lifecycle != nil && lifecycle.TypedSpec().Value.GetShuttingDown() {
		return "agent shutting down", nil
	}

	return healthReason(ctx, r, spec.GetHealthCheck())
}

// healthUnknown ends the reason of a node whose health gate has no verdict yet.
const healthUnknown = " health unknown"

// notOurs marks the reason of a VIP on its link that talos-lb did not add.
const notOurs = "not added by talos-lb"

// healthReason is why the health gate keeps this node from holding, or "".
func healthReason(ctx context.Context, r controller.Reader, check string) (string, error) {
	if check == "" {
		return "", nil
	}

	h, err := safe.ReaderGetByID[*resources.EndpointHealth](ctx, r, check)
	if err != nil && !state.IsNotFoundError(err) {
		return "", fmt.Errorf("reading health %s: %w", check, err)
	}

	switch {
	case h == nil:
		return check + healthUnknown, nil
	case h.TypedSpec().Value.GetHealthy():
		return "", nil
	case h.TypedSpec().Value.GetState() == "unknown":
		return check + healthUnknown, nil
	default:
		return fmt.Sprintf("%s unhealthy: %s", check, h.TypedSpec().Value.GetLastError()), nil
	}
}

// addressProblem checks a VIP against its link: it must exist, an L2 VIP must
// fall in one of the link's subnets (or nobody on the segment can reach it),
// and it must not be an address someone else put there.
func addressProblem(vip, link string, routed bool, linkAddrs []netip.Prefix, linkErr error, managed safe.List[*resources.ManagedAddress]) string {
	ip, err := netip.ParseAddr(vip)
	if err != nil {
		return fmt.Sprintf("not an IP address: %q", vip)
	}

	if errors.Is(linkErr, netutil.ErrNoLink) {
		return fmt.Sprintf("link %s does not exist", link)
	}

	if linkErr != nil {
		return linkErr.Error()
	}

	ours := map[netip.Addr]bool{}

	for m := range managed.All() {
		if p, err := netip.ParsePrefix(m.TypedSpec().Value.GetAddress()); err == nil {
			ours[p.Addr()] = true
		}
	}

	var subnets []string

	inSubnet := false

	for _, p := range linkAddrs {
		if p.Addr() == ip && !ours[ip] {
			return fmt.Sprintf("%s is already an address of %s, %s (a VIP must not be a node address)", ip, link, notOurs)
		}

		// Our own VIPs are no subnet to reach a VIP through.
		if ours[p.Addr()] || p.Addr().IsLinkLocalUnicast() || p.Addr().Is4() != ip.Is4() {
			continue
		}

		subnets = append(subnets, p.String())

		if p.Masked().Contains(ip) {
			inSubnet = true
		}
	}

	// A routed (BGP) VIP needs no subnet: routers bring its traffic.
	if !inSubnet && !routed {
		return fmt.Sprintf("%s is inside no subnet of %s (%s)", ip, link, strings.Join(subnets, ", "))
	}

	return ""
}

func write(ctx context.Context, r controller.ReaderWriter, address, link, reason string) error {
	return safe.WriterModify(ctx, r, resources.NewVIPStatus(address), func(res *resources.VIPStatus) error {
		s := res.TypedSpec().Value
		holding := reason == ""

		if s.GetSince() == nil || s.GetHolding() != holding || s.GetReason() != reason {
			s.Since = timestamppb.New(time.Now())
		}

		s.Address, s.Link, s.Holding, s.Reason = address, link, holding, reason

		return nil
	})
}
