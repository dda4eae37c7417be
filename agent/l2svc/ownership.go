// Package l2svc decides which L2-mode service IPs this node answers ARP/NDP
// for, and makes it so.
//
// OwnershipController reads the pushed ServiceIPs and NodeSets and the
// Members the liveness gossip publishes, picks each IP's owner the way every
// other agent does (the best-ranked live node of its node set, pkg/rank), hands
// the IPs this node owns to a Responder (package responder answers from raw
// sockets) and writes one L2Ownership per IP saying who owns it and, on the
// other nodes, why they do not. It needs neither the controller nor
// Kubernetes: when the owner dies the survivors agree on the next one alone.
//
// It never adds addresses to interfaces (kube-proxy or Cilium carry the
// traffic) and does not run the gossip (package member does).
package l2svc

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/netutil"
	"github.com/talos-lb/talos-lb/pkg/rank"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Responder answers ARP/NDP for exactly the addresses given, each on its
// interfaces, from the moment Set returns; it reports what failed per address.
// Reannounce sends the takeover announcements again for everything answered.
type Responder interface {
	Set(want map[netip.Addr][]string) map[netip.Addr]error
	Reannounce()
}

// Defaults of OwnershipController's tunables.
const (
	DefaultStartupGrace = 5 * time.Second
	DefaultResync       = 30 * time.Second
	// rankingShown bounds L2OwnershipSpec.ranking.
	rankingShown = 8
)

// OwnershipController writes L2Ownership and drives the Responder.
type OwnershipController struct {
	// NodeName is this node.
	NodeName   string
	Responder  Responder
	Interfaces Interfaces
	// Changes says when addresses may have changed (nil: only Resync notices).
	Changes netutil.AddressSource
	// StartupGrace is how long after gossip first shows members a node it
	// has not shown still counts as live (DefaultStartupGrace).
	StartupGrace time.Duration
	// Resync re-reads the interfaces this often (DefaultResync), for link
	// changes no address change reveals.
	Resync time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Name implements controller.Controller.
func (ctrl *OwnershipController) Name() string {
	return "l2svc.OwnershipController"
}

// Inputs implements controller.Controller.
func (ctrl *OwnershipController) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.ServiceNamespace, Type: resources.ServiceIPType, Kind: controller.InputWeak},
		{Namespace: resources.ServiceNamespace, Type: resources.NodeSetType, Kind: controller.InputWeak},
		{Namespace: resources.AgentNamespace, Type: resources.MemberType, Kind: controller.InputWeak},
		{Namespace: resources.AgentNamespace, Type: resources.AgentLifecycleType, ID: optional.Some(resources.AgentLifecycleID), Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *OwnershipController) Outputs() []controller.Output {
	return []controller.Output{{Type: resources.L2OwnershipType, Kind: controller.OutputExclusive}}
}

// Run implements controller.Controller.
func (ctrl *OwnershipController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	if ctrl.Now == nil {
		ctrl.Now = time.Now
	}

	if ctrl.StartupGrace <= 0 {
		ctrl.StartupGrace = DefaultStartupGrace
	}

	if ctrl.Resync <= 0 {
		ctrl.Resync = DefaultResync
	}

	changed := make(chan struct{}, 1)

	if ctrl.Changes != nil {
		go func() {
			if err := ctrl.Changes.Watch(ctx, changed); err != nil {
				logger.Warn("not watching address changes", zap.Error(err))
			}
		}()
	}

	// Whatever ends the loop, nothing stays answered on a stale decision.
	defer ctrl.Responder.Set(nil)

	resync := time.NewTicker(ctrl.Resync)
	defer resync.Stop()

	grace := time.NewTimer(time.Hour)
	grace.Stop()

	s := &session{clock: graceClock{grace: ctrl.StartupGrace}, owned: map[string]bool{}}

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-changed:
		case <-resync.C:
		case <-grace.C:
		}

		graceEnd, err := ctrl.reconcile(ctx, r, logger, s)
		if err != nil {
			return err
		}

		if !graceEnd.IsZero() {
			grace.Reset(graceEnd.Sub(ctrl.Now()) + time.Millisecond)
		}
	}
}

// session is what the controller remembers between reconciles.
type session struct {
	clock graceClock
	// owned: the addresses this node answered for, to log changes.
	owned map[string]bool
	// live: whether each member counted as live (nil before the first
	// reconcile); liveGrace: whether unseen nodes still counted as live then.
	live      map[string]bool
	liveGrace bool
}

// view is one L2Ownership's content.
type view struct {
	ip       netip.Addr
	spec     *resourcepb.L2OwnershipSpec
	problems []string
}

// reconcile returns when the startup grace ends, if it still runs.
func (ctrl *OwnershipController) reconcile(ctx context.Context, r controller.Runtime, logger *zap.Logger, s *session) (time.Time, error) {
	now := ctrl.Now()

	sips, err := safe.ReaderListAll[*resources.ServiceIP](ctx, r)
	if err != nil {
		return time.Time{}, fmt.Errorf("listing service IPs: %w", err)
	}

	setList, err := safe.ReaderListAll[*resources.NodeSet](ctx, r)
	if err != nil {
		return time.Time{}, fmt.Errorf("listing node sets: %w", err)
	}

	memberList, err := safe.ReaderListAll[*resources.Member](ctx, r)
	if err != nil {
		return time.Time{}, fmt.Errorf("listing members: %w", err)
	}

	lifecycle, err := safe.ReaderGetByID[*resources.AgentLifecycle](ctx, r, resources.AgentLifecycleID)
	if err != nil && !state.IsNotFoundError(err) {
		return time.Time{}, fmt.Errorf("reading agent lifecycle: %w", err)
	}

	shuttingDown := lifecycle != nil && lifecycle.TypedSpec().Value.GetShuttingDown()

	sets := map[string]*resourcepb.NodeSet{}
	for ns := range setList.All() {
		sets[ns.Metadata().ID()] = ns.TypedSpec().Value
	}

	live := &liveness{self: ctrl.NodeName, members: map[string]*resourcepb.MemberSpec{}}
	for m := range memberList.All() {
		live.members[m.Metadata().ID()] = m.TypedSpec().Value
	}

	live.known = len(live.members) > 0

	var graceEnd time.Time

	live.inGrace, graceEnd = s.clock.observe(now, live.known)
	if !live.inGrace {
		graceEnd = time.Time{}
	}

	ifaces, listErr := ctrl.Interfaces.List()

	var views []*view

	want := map[netip.Addr][]string{}

	for sip := range sips.All() {
		l2 := sip.TypedSpec().Value.GetL2()
		if l2 == nil {
			continue
		}

		v := ctrl.decide(sip.Metadata().ID(), sip.TypedSpec().Value, sets, live, shuttingDown)

		if v.ip.IsValid() {
			names, problem := chooseInterfaces(v.ip, l2.GetInterfaces(), ifaces, listErr)
			v.spec.Interfaces = names

			if problem != "" {
				v.problems = append(v.problems, problem)
			}

			if v.spec.GetOwned() && len(names) > 0 {
				want[v.ip] = names
			}
		}

		views = append(views, v)
	}

	// Answer (or stop) before writing status: the wire goes first.
	errs := ctrl.Responder.Set(want)

	// A member that comes back (a healed partition, a rebooted node) may have
	// answered for these IPs while it could not see this node, and pointed the
	// clients at itself: announce again, as on a takeover.
	if s.rejoined(live) && len(want) > 0 {
		logger.Info("a member is live again: announcing the owned IPs again", zap.Int("ips", len(want)))
		ctrl.Responder.Reannounce()
	}

	r.StartTrackingOutputs()

	for _, v := range views {
		if err := errs[v.ip]; err != nil {
			v.problems = append(v.problems, err.Error())
		}

		if err := ctrl.write(ctx, r, now, v); err != nil {
			return time.Time{}, err
		}

		addr := v.spec.GetAddress()
		if owned := v.spec.GetOwned(); owned != s.owned[addr] {
			logger.Info("L2 ownership changed", zap.String("address", addr), zap.Bool("owned", owned),
				zap.String("owner", v.spec.GetOwner()), zap.String("reason", v.spec.GetReason()), zap.Strings("interfaces", v.spec.GetInterfaces()))
		}
	}

	s.owned = map[string]bool{}

	for _, v := range views {
		if v.spec.GetOwned() {
			s.owned[v.spec.GetAddress()] = true
		}
	}

	if err := r.CleanupOutputs(ctx, resources.NewL2Ownership("").Metadata()); err != nil {
		return time.Time{}, fmt.Errorf("cleaning up L2 ownerships: %w", err)
	}

	return graceEnd, nil
}

// decide computes the owner of one service IP and whether and why not this node.
func (ctrl *OwnershipController) decide(id string, sip *resourcepb.ServiceIPSpec, sets map[string]*resourcepb.NodeSet, live *liveness, shuttingDown bool) *view {
	address := sip.GetAddress()
	if address == "" {
		address = id
	}

	setName := sip.GetL2().GetNodeSet()
	v := &view{spec: &resourcepb.L2OwnershipSpec{
		Address:  address,
		Services: sip.GetServices(),
		NodeSet:  setName,
		Liveness: live.source(),
	}}

	ip, err := netip.ParseAddr(address)
	if err != nil {
		v.spec.Reason = fmt.Sprintf("not an IP address: %q", address)

		return v
	}

	v.ip = ip.Unmap()

	set, ok := sets[setName]
	if !ok {
		v.spec.Reason = fmt.Sprintf("node set %q not pushed", setName)

		return v
	}

	nodes := set.GetNodes()
	liveNodes := slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return !live.live(n) })
	ranking := rank.Order(address, liveNodes)

	if len(ranking) > 0 {
		v.spec.Owner = ranking[0]
	}

	v.spec.Ranking = ranking[:min(len(ranking), rankingShown)]

	switch {
	case shuttingDown:
		v.spec.Reason = "agent shutting down"
	case !slices.Contains(nodes, ctrl.NodeName):
		v.spec.Reason = notEligibleReason(set, ctrl.NodeName)
	case !live.live(ctrl.NodeName):
		v.spec.Reason = fmt.Sprintf("not live (%s)", live.state(ctrl.NodeName))
	case v.spec.GetOwner() != ctrl.NodeName:
		v.spec.Reason = "not best ranked: " + v.spec.GetOwner()
	default:
		v.spec.Owned = true
	}

	return v
}

func notEligibleReason(set *resourcepb.NodeSet, node string) string {
	if r := set.GetExcluded()[node]; r != "" {
		return r
	}

	if r := set.GetDefaultReason(); r != "" {
		return r
	}

	return "not eligible"
}

func (ctrl *OwnershipController) write(ctx context.Context, r controller.ReaderWriter, now time.Time, v *view) error {
	v.spec.Error = ""
	if len(v.problems) > 0 {
		v.spec.Error = v.problems[0]
		for _, p := range v.problems[1:] {
			v.spec.Error += "; " + p
		}
	}

	return safe.WriterModify(ctx, r, resources.NewL2Ownership(v.spec.GetAddress()), func(res *resources.L2Ownership) error {
		old := res.TypedSpec().Value
		since := old.GetSince()

		if since == nil || old.GetOwned() != v.spec.GetOwned() || old.GetOwner() != v.spec.GetOwner() || old.GetReason() != v.spec.GetReason() {
			since = timestamppb.New(now)
		}

		v.spec.Since = since
		res.TypedSpec().Value = v.spec

		return nil
	})
}

// owned lists the addresses this node owns in the state, sorted.
func owned(ctx context.Context, r state.State) ([]string, error) {
	list, err := safe.StateListAll[*resources.L2Ownership](ctx, r)
	if err != nil {
		return nil, err
	}

	var out []string

	for o := range list.All() {
		if o.TypedSpec().Value.GetOwned() && len(o.TypedSpec().Value.GetInterfaces()) > 0 {
			out = append(out, o.TypedSpec().Value.GetAddress())
		}
	}

	slices.Sort(out)

	return out, nil
}

// rejoined records which members count as live and says whether one that
// did not before (dead, left, or unseen after the grace period) does now.
func (s *session) rejoined(l *liveness) bool {
	if !l.known {
		s.live = nil

		return false
	}

	now := make(map[string]bool, len(l.members))
	back := false

	for name := range l.members {
		if name == l.self {
			continue
		}

		now[name] = l.live(name)

		if s.live == nil || !now[name] {
			continue
		}

		if was, known := s.live[name]; known && !was || !known && !s.liveGrace {
			back = true
		}
	}

	s.live, s.liveGrace = now, l.inGrace

	return back
}
