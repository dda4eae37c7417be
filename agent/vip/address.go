package vip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/l2"
	"github.com/talos-lb/talos-lb/pkg/netutil"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// AddressController adds the VIPs this node holds to their link, announces
// them, and removes them when it stops holding them or the agent stops. It
// only ever removes addresses it added: those are recorded on disk before
// they are added, so a restarted agent also cleans up after a crash.
//
// In BGP mode a crash is different: routers that keep the node's routes
// through a graceful restart go on sending it the VIP's traffic, so the
// VIPs its predecessor left on lo stay until the health gate's first
// verdict (at most LeftoverHold), instead of going for the ~0.2 s the
// check takes to pass again.
type AddressController struct {
	Links     netutil.Links
	Announcer l2.Announcer
	// LeftoverHold bounds how long BGP-mode leftovers wait for a verdict; default 10 s.
	LeftoverHold time.Duration
}

// Name implements controller.Controller.
func (ctrl *AddressController) Name() string {
	return "vip.AddressController"
}

// Inputs implements controller.Controller.
func (ctrl *AddressController) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.VIPNamespace, Type: resources.VIPConfigType, ID: optional.Some(resources.ControlPlaneID), Kind: controller.InputWeak},
		{Namespace: resources.VIPNamespace, Type: resources.VIPStatusType, Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *AddressController) Outputs() []controller.Output {
	return []controller.Output{{Type: resources.ManagedAddressType, Kind: controller.OutputExclusive}}
}

// held is one address on the wire.
type held struct {
	link          string
	prefix        netip.Prefix
	addedAt       time.Time
	stopAnnounce  context.CancelFunc
	announcements uint32
	lastError     string
	// adoptedUntil: a BGP-mode leftover of the previous run, kept until the
	// health gate decides or this time passes; zero once held as usual.
	adoptedUntil time.Time
}

func (h *held) id() string {
	return h.link + "/" + h.prefix.String()
}

type announced struct {
	id  string
	err error
}

// Run implements controller.Controller.
func (ctrl *AddressController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	addrs := map[string]*held{}
	results := make(chan announced)

	var (
		rec      *record
		adoption <-chan time.Time // the leftovers' hold runs out
	)

	// Whatever happens, what we added goes away with us.
	defer func() {
		for id, h := range addrs {
			ctrl.release(h, rec, logger)
			delete(addrs, id)
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-adoption:
			adoption = nil
		case res := <-results:
			h, ok := addrs[res.id]
			if !ok {
				continue
			}

			h.announcements++
			h.lastError = ""

			if res.err != nil {
				h.lastError = res.err.Error()
				logger.Warn("announcement failed", zap.String("address", h.prefix.String()), zap.Error(res.err))
			}
		}

		cfg, err := safe.ReaderGetByID[*resources.VIPConfig](ctx, r, resources.ControlPlaneID)
		if err != nil && !state.IsNotFoundError(err) {
			return fmt.Errorf("reading vip config: %w", err)
		}

		if rec == nil && cfg != nil {
			rec = openRecord(cfg.TypedSpec().Value.GetStateDir())
			if ctrl.handleLeftovers(rec, cfg.TypedSpec().Value, addrs, logger) {
				adoption = time.After(ctrl.leftoverHold())
			}
		}

		want, waiting, err := wanted(ctx, r, cfg)
		if err != nil {
			return err
		}

		r.StartTrackingOutputs()

		now := time.Now()

		for id, h := range addrs {
			if _, ok := want[id]; ok {
				h.adoptedUntil = time.Time{}

				continue
			}

			if wait, spoken := waiting[id]; now.Before(h.adoptedUntil) && (wait || !spoken) {
				continue
			}

			ctrl.release(h, rec, logger)
			delete(addrs, id)
		}

		for id, h := range want {
			if _, ok := addrs[id]; ok {
				continue
			}

			if err := ctrl.take(ctx, r, h, rec, cfg.TypedSpec().Value, results, logger); err != nil {
				h.lastError = err.Error()
				logger.Error("cannot add VIP", zap.String("address", h.prefix.String()), zap.String("link", h.link), zap.Error(err))

				continue
			}

			addrs[id] = h
		}

		for _, h := range addrs {
			if err := writeManaged(ctx, r, h); err != nil {
				return err
			}
		}

		if err := r.CleanupOutputs(ctx, resources.NewManagedAddress("").Metadata()); err != nil {
			return fmt.Errorf("cleaning up managed addresses: %w", err)
		}
	}
}

// wanted lists the addresses VIPStatus says this node holds, and says of
// the others whether it does not hold them only for want of a verdict yet
// (true: no health result, or a leftover the status saw before this
// controller claimed it) or for good (false). An address it has not spoken
// of is missing from waiting.
func wanted(ctx context.Context, r controller.Reader, cfg *resources.VIPConfig) (want map[string]*held, waiting map[string]bool, err error) {
	want, waiting = map[string]*held{}, map[string]bool{}

	if cfg == nil {
		return want, waiting, nil
	}

	statuses, err := safe.ReaderListAll[*resources.VIPStatus](ctx, r)
	if err != nil {
		return nil, nil, fmt.Errorf("listing vip statuses: %w", err)
	}

	for s := range statuses.All() {
		spec := s.TypedSpec().Value

		ip, err := netip.ParseAddr(spec.GetAddress())
		if err != nil {
			continue
		}

		h := &held{link: spec.GetLink(), prefix: netip.PrefixFrom(ip, ip.BitLen())}

		reason := spec.GetReason()

		if spec.GetHolding() {
			want[h.id()] = h
		} else {
			waiting[h.id()] = strings.HasSuffix(reason, healthUnknown) || strings.Contains(reason, notOurs)
		}
	}

	return want, waiting, nil
}

// take records the address as ours (on disk and as a resource) before adding
// it, so no observer ever sees it on the link without knowing it is ours.
func (ctrl *AddressController) take(ctx context.Context, r controller.ReaderWriter, h *held, rec *record, spec *resourcepb.VipConfigSpec, results chan<- announced, logger *zap.Logger) error {
	h.addedAt = time.Now()

	if err := rec.add(h.link, h.prefix); err != nil {
		return err
	}

	if err := writeManaged(ctx, r, h); err != nil {
		return err
	}

	if err := ctrl.Links.AddAddress(h.link, h.prefix); err != nil && !errors.Is(err, unix.EEXIST) {
		rec.remove(h.link, h.prefix) //nolint:errcheck // the add failed; the record only has to err on the side of "ours"

		return err
	}

	logger.Info("VIP added", zap.String("address", h.prefix.String()), zap.String("link", h.link))

	announceCtx, cancel := context.WithCancel(ctx)
	h.stopAnnounce = cancel

	// A BGP-mode VIP lives on lo: routers, not neighbour caches, bring its traffic.
	if spec.GetMode() != "bgp" {
		go ctrl.announce(announceCtx, h.id(), h.link, h.prefix.Addr(), spec, results)
	}

	return nil
}

func (ctrl *AddressController) release(h *held, rec *record, logger *zap.Logger) {
	if h.stopAnnounce != nil {
		h.stopAnnounce()
	}

	if err := ctrl.Links.RemoveAddress(h.link, h.prefix); err != nil {
		logger.Error("cannot remove VIP", zap.String("address", h.prefix.String()), zap.Error(err))

		return
	}

	if rec != nil {
		if err := rec.remove(h.link, h.prefix); err != nil {
			logger.Warn("updating the VIP record", zap.Error(err))
		}
	}

	logger.Info("VIP removed", zap.String("address", h.prefix.String()), zap.String("link", h.link))
}

// handleLeftovers deals with what a previous run added and did not live to
// remove: removed, except BGP-mode VIPs still on their link, which are kept
// in addrs for the health gate to decide (it says whether it kept any).
func (ctrl *AddressController) handleLeftovers(rec *record, spec *resourcepb.VipConfigSpec, addrs map[string]*held, logger *zap.Logger) bool {
	var present []netip.Prefix

	if spec.GetMode() == "bgp" {
		present, _ = ctrl.Links.Addresses(spec.GetLink()) //nolint:errcheck // a missing link keeps nothing
	}

	adopted := false

	for _, e := range rec.entries() {
		h := &held{link: e.Link, prefix: e.Prefix}

		if e.Link == spec.GetLink() && slices.Contains(present, e.Prefix) && slices.Contains(spec.GetAddresses(), e.Prefix.Addr().String()) {
			h.addedAt, h.adoptedUntil = time.Now(), time.Now().Add(ctrl.leftoverHold())
			addrs[h.id()] = h
			adopted = true

			logger.Info("VIP left by the previous run kept until the health check decides", zap.String("address", h.prefix.String()), zap.String("link", h.link))

			continue
		}

		ctrl.release(h, rec, logger)
	}

	return adopted
}

func (ctrl *AddressController) leftoverHold() time.Duration {
	if ctrl.LeftoverHold > 0 {
		return ctrl.LeftoverHold
	}

	return 10 * time.Second
}

// announce sends a burst on takeover, then one every refresh, so both caches
// that saw the old holder and ones that expire later follow this node.
func (ctrl *AddressController) announce(ctx context.Context, id, link string, ip netip.Addr, spec *resourcepb.VipConfigSpec, results chan<- announced) {
	send := func() bool {
		err := ctrl.Announcer.Announce(link, ip)

		select {
		case results <- announced{id: id, err: err}:
			return true
		case <-ctx.Done():
			return false
		}
	}

	wait := func(d time.Duration) bool {
		select {
		case <-time.After(d):
			return true
		case <-ctx.Done():
			return false
		}
	}

	for i := range spec.GetAnnounceCount() {
		if i > 0 && !wait(spec.GetAnnounceInterval().AsDuration()) {
			return
		}

		if !send() {
			return
		}
	}

	refresh := spec.GetAnnounceRefresh().AsDuration()
	if refresh <= 0 {
		return
	}

	for wait(refresh) && send() {
	}
}

func writeManaged(ctx context.Context, r controller.ReaderWriter, h *held) error {
	return safe.WriterModify(ctx, r, resources.NewManagedAddress(h.id()), func(res *resources.ManagedAddress) error {
		s := res.TypedSpec().Value
		s.Link = h.link
		s.Address = h.prefix.String()
		s.AddedAt = timestamppb.New(h.addedAt)
		s.Announcements = h.announcements
		s.LastError = h.lastError

		return nil
	})
}
