package vip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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
type AddressController struct {
	Links     netutil.Links
	Announcer l2.Announcer
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

	var rec *record

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
			ctrl.cleanLeftovers(rec, logger)
		}

		want, err := wanted(ctx, r, cfg)
		if err != nil {
			return err
		}

		r.StartTrackingOutputs()

		for id, h := range addrs {
			if _, ok := want[id]; !ok {
				ctrl.release(h, rec, logger)
				delete(addrs, id)
			}
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

// wanted lists the addresses VIPStatus says this node holds.
func wanted(ctx context.Context, r controller.Reader, cfg *resources.VIPConfig) (map[string]*held, error) {
	want := map[string]*held{}

	if cfg == nil {
		return want, nil
	}

	statuses, err := safe.ReaderListAll[*resources.VIPStatus](ctx, r)
	if err != nil {
		return nil, fmt.Errorf("listing vip statuses: %w", err)
	}

	for s := range statuses.All() {
		spec := s.TypedSpec().Value
		if !spec.GetHolding() {
			continue
		}

		ip, err := netip.ParseAddr(spec.GetAddress())
		if err != nil {
			continue
		}

		h := &held{link: spec.GetLink(), prefix: netip.PrefixFrom(ip, ip.BitLen())}
		want[h.id()] = h
	}

	return want, nil
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

// cleanLeftovers removes what a previous run added and did not live to remove.
func (ctrl *AddressController) cleanLeftovers(rec *record, logger *zap.Logger) {
	for _, e := range rec.entries() {
		ctrl.release(&held{link: e.Link, prefix: e.Prefix}, rec, logger)
	}
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
