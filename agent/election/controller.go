// Package election runs the control-plane VIP election: a Raft group of the
// control-plane agents (no etcd, no Kubernetes, so it works from first boot),
// whose leader is the one node allowed to hold the VIP. It publishes
// VIPLeadership and owns nothing else; the vip package decides what to hold.
//
// Safety comes from Raft's leader lease: a leader that has not heard from a
// quorum for leaderLeaseTimeout steps down, and followers only start an
// election after heartbeatTimeout ≥ 2 × leaderLeaseTimeout without a leader,
// so an isolated leader has let go before the majority elects another.
package election

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/hashicorp/raft"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Controller runs this node's Raft member from VIPConfig.
type Controller struct {
	Transport TransportFactory
	// LogOutput receives Raft's own warnings.
	LogOutput io.Writer
}

// Name implements controller.Controller.
func (ctrl *Controller) Name() string {
	return "election.Controller"
}

// Inputs implements controller.Controller.
func (ctrl *Controller) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.VIPNamespace, Type: resources.VIPConfigType, ID: optional.Some(resources.ControlPlaneID), Kind: controller.InputWeak},
		{Namespace: resources.AgentNamespace, Type: resources.EndpointHealthType, Kind: controller.InputWeak},
		{Namespace: resources.AgentNamespace, Type: resources.AgentLifecycleType, ID: optional.Some(resources.AgentLifecycleID), Kind: controller.InputWeak},
		{Namespace: resources.VIPNamespace, Type: resources.ManagedAddressType, Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *Controller) Outputs() []controller.Output {
	return []controller.Output{{Type: resources.VIPLeadershipType, Kind: controller.OutputExclusive}}
}

// signals wake the controller loop besides resource events.
type signals struct {
	observations chan raft.Observation
	// wake fires when a new leader's hold-off ends.
	wake chan struct{}
	// released carries a leader term whose predecessor released the VIP.
	released chan uint64
}

// run is the state of one Run: the Raft node and what was observed of it.
type run struct {
	node     *node
	settings Settings
	peers    []*resourcepb.VipPeer

	state       string
	leader      string
	since       time.Time
	leaderSince time.Time
	// lastTransfer rate-limits handing leadership away while unhealthy.
	lastTransfer time.Time
	handedOff    bool
	lastError    string

	leaderTerm uint64
	settleAt   time.Time
	settled    bool
}

// transferCooldown keeps a leadership that nobody healthy can take from
// bouncing between unhealthy nodes faster than this.
const transferCooldown = 2 * time.Second

// Run implements controller.Controller.
func (ctrl *Controller) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	sig := &signals{observations: make(chan raft.Observation, 64), wake: make(chan struct{}, 1), released: make(chan uint64, 1)}
	st := &run{}

	defer func() {
		if st.node != nil {
			if err := st.node.shutdown(); err != nil {
				logger.Warn("stopping election", zap.Error(err))
			}
		}
	}()

	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-sig.observations:
		case <-sig.wake:
		case term := <-sig.released:
			if st.leaderTerm == term {
				st.settled = true
			}
		case <-ticker.C:
			// Catches what no event announces: a leader's health cooldown ending.
		}

		if err := ctrl.reconcile(ctx, r, logger, st, sig); err != nil {
			return err
		}
	}
}

func (ctrl *Controller) reconcile(ctx context.Context, r controller.Runtime, logger *zap.Logger, st *run, sig *signals) error {
	cfg, err := safe.ReaderGetByID[*resources.VIPConfig](ctx, r, resources.ControlPlaneID)
	if err != nil && !state.IsNotFoundError(err) {
		return fmt.Errorf("reading vip config: %w", err)
	}

	r.StartTrackingOutputs()

	// A BGP-mode VIP has no single holder to elect: every healthy node announces it.
	if cfg == nil || cfg.TypedSpec().Value.GetMode() == "bgp" {
		ctrl.stop(st, logger)

		return cleanup(ctx, r)
	}

	spec := cfg.TypedSpec().Value

	if st.node != nil && st.settings != settingsOf(spec) {
		logger.Info("election settings changed, restarting the election member")
		ctrl.stop(st, logger)
	}

	if st.node == nil {
		if err := ctrl.start(st, spec, sig.observations); err != nil {
			st.lastError = err.Error()
			// A member that is not running holds nothing to hand over.
			st.handedOff = true

			logger.Error("election not running", zap.Error(err))

			return ctrl.publish(ctx, r, st, false)
		}

		logger.Info("election started", zap.String("listen", st.settings.Listen), zap.Int("peers", len(spec.GetPeers())))
	}

	ctrl.observe(st, logger, sig)
	ctrl.settle(st, sig)

	lifecycle, err := safe.ReaderGetByID[*resources.AgentLifecycle](ctx, r, resources.AgentLifecycleID)
	if err != nil && !state.IsNotFoundError(err) {
		return fmt.Errorf("reading agent lifecycle: %w", err)
	}

	steppingDown := lifecycle != nil && lifecycle.TypedSpec().Value.GetShuttingDown()

	switch {
	case steppingDown:
		if err := ctrl.handOff(ctx, r, logger, st); err != nil {
			return err
		}
	case st.state == raft.Leader.String():
		if err := ctrl.leaderDuties(ctx, r, logger, st, spec); err != nil {
			return err
		}
	}

	return ctrl.publish(ctx, r, st, steppingDown)
}

func (ctrl *Controller) start(st *run, spec *resourcepb.VipConfigSpec, observations chan raft.Observation) error {
	s := settingsOf(spec)

	transport, err := ctrl.Transport(s, ctrl.LogOutput)
	if err != nil {
		return err
	}

	n, err := newNode(s, spec.GetPeers(), transport, ctrl.LogOutput)
	if err != nil {
		if c, ok := transport.(io.Closer); ok {
			c.Close() //nolint:errcheck
		}

		return err
	}

	n.raft.RegisterObserver(raft.NewObserver(observations, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.RaftState, raft.LeaderObservation, raft.PeerObservation:
			return true
		default:
			return false
		}
	}))

	*st = run{node: n, settings: s, peers: spec.GetPeers(), since: time.Now(), lastError: ""}

	return nil
}

func (ctrl *Controller) stop(st *run, logger *zap.Logger) {
	if st.node == nil {
		return
	}

	if err := st.node.shutdown(); err != nil {
		logger.Warn("stopping election", zap.Error(err))
	}

	*st = run{}
}

// observe reads Raft's state; observations only say when to look.
func (ctrl *Controller) observe(st *run, logger *zap.Logger, sig *signals) {
	state := st.node.raft.State().String()
	_, leaderID := st.node.raft.LeaderWithID()
	leader := string(leaderID)

	if state == st.state && leader == st.leader {
		return
	}

	now := time.Now()
	if state == raft.Leader.String() && st.state != state {
		st.leaderSince = now
		ctrl.becameLeader(st, now, sig, logger)
	}

	logger.Info("election changed", zap.String("state", state), zap.String("leader", leader), zap.Uint64("term", st.node.raft.CurrentTerm()))

	st.state, st.leader, st.since = state, leader, now
}

// leaderDuties keeps membership in step with the config, and hands leadership
// away while the local API server is unhealthy.
func (ctrl *Controller) leaderDuties(ctx context.Context, r controller.Reader, logger *zap.Logger, st *run, spec *resourcepb.VipConfigSpec) error {
	if !slices.EqualFunc(st.peers, spec.GetPeers(), func(a, b *resourcepb.VipPeer) bool { return proto.Equal(a, b) }) {
		if err := ctrl.reconcileMembership(st, spec.GetPeers(), logger); err != nil {
			st.lastError = err.Error()
		} else {
			st.peers = spec.GetPeers()
		}
	}

	check := spec.GetHealthCheck()
	if check == "" {
		return nil
	}

	health, err := safe.ReaderGetByID[*resources.EndpointHealth](ctx, r, check)
	if err != nil && !state.IsNotFoundError(err) {
		return fmt.Errorf("reading health %s: %w", check, err)
	}

	// Only a verdict of unhealthy moves leadership: "unknown" is a node that has just started.
	if health == nil || health.TypedSpec().Value.GetState() != "unhealthy" {
		return nil
	}

	now := time.Now()
	if now.Sub(st.leaderSince) < transferCooldown || now.Sub(st.lastTransfer) < transferCooldown {
		return nil
	}

	st.lastTransfer = now

	logger.Warn("local API server unhealthy, handing leadership to a peer", zap.String("check", check), zap.String("error", health.TypedSpec().Value.GetLastError()))

	// Asynchronous: the transfer waits for a peer to catch up, and the
	// controller must keep publishing meanwhile. Raft's own result is logged.
	future := st.node.raft.LeadershipTransfer()

	go func() {
		if err := future.Error(); err != nil {
			logger.Warn("leadership transfer failed", zap.Error(err))
		}
	}()

	return nil
}

func (ctrl *Controller) reconcileMembership(st *run, peers []*resourcepb.VipPeer, logger *zap.Logger) error {
	future := st.node.raft.GetConfiguration()
	if err := future.Error(); err != nil {
		return fmt.Errorf("reading election membership: %w", err)
	}

	want := membership(peers)

	for _, s := range want.Servers {
		if !slices.Contains(future.Configuration().Servers, s) {
			logger.Info("adding election peer", zap.String("peer", string(s.ID)), zap.String("address", string(s.Address)))

			if err := st.node.raft.AddVoter(s.ID, s.Address, 0, 0).Error(); err != nil {
				return fmt.Errorf("adding election peer %s: %w", s.ID, err)
			}
		}
	}

	for _, s := range future.Configuration().Servers {
		if !slices.ContainsFunc(want.Servers, func(w raft.Server) bool { return w.ID == s.ID }) {
			logger.Info("removing election peer", zap.String("peer", string(s.ID)))

			if err := st.node.raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
				return fmt.Errorf("removing election peer %s: %w", s.ID, err)
			}
		}
	}

	return nil
}

// handOff runs while the agent stops: first the VIP goes (the vip controller
// sees stepping_down), then leadership moves, so two nodes never hold it.
func (ctrl *Controller) handOff(ctx context.Context, r controller.Reader, logger *zap.Logger, st *run) error {
	if st.handedOff {
		return nil
	}

	if st.state != raft.Leader.String() {
		st.handedOff = true

		return nil
	}

	held, err := safe.ReaderListAll[*resources.ManagedAddress](ctx, r)
	if err != nil {
		return fmt.Errorf("listing managed addresses: %w", err)
	}

	if held.Len() > 0 {
		return nil // the next event, the addresses' removal, brings us back
	}

	start := time.Now()

	// The marker lets the next leader hold the VIP at once instead of waiting out our lease.
	if err := st.node.raft.Apply(encodeRelease(st.node.raft.CurrentTerm()), time.Second).Error(); err != nil {
		logger.Warn("recording the VIP release", zap.Error(err))
	}

	if err := st.node.raft.LeadershipTransfer().Error(); err != nil && !errors.Is(err, raft.ErrNotLeader) {
		logger.Warn("leadership hand-off failed; peers elect after the heartbeat timeout", zap.Error(err))
	} else {
		logger.Info("leadership handed off", zap.Duration("took", time.Since(start)))
	}

	st.handedOff = true

	return nil
}

func (ctrl *Controller) publish(ctx context.Context, r controller.Runtime, st *run, steppingDown bool) error {
	var term uint64

	var members []*resourcepb.VipPeerStatus

	if st.node != nil {
		term = st.node.raft.CurrentTerm()

		if future := st.node.raft.GetConfiguration(); future.Error() == nil {
			for _, s := range future.Configuration().Servers {
				members = append(members, &resourcepb.VipPeerStatus{Name: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
			}
		}
	}

	if err := safe.WriterModify(ctx, r, resources.NewVIPLeadership(), func(res *resources.VIPLeadership) error {
		s := res.TypedSpec().Value
		s.State = st.state
		if s.State == "" {
			s.State = "stopped"
		}

		s.Leader = st.leader
		s.Term = term
		s.Since = timestamppb.New(st.since)
		s.Peers = members
		s.SteppingDown = steppingDown
		s.HandedOff = st.handedOff
		s.LastError = st.lastError
		s.Settled = st.settled && !steppingDown

		return nil
	}); err != nil {
		return fmt.Errorf("writing vip leadership: %w", err)
	}

	return cleanup(ctx, r)
}

func cleanup(ctx context.Context, r controller.Runtime) error {
	if err := r.CleanupOutputs(ctx, resources.NewVIPLeadership().Metadata()); err != nil {
		return fmt.Errorf("cleaning up vip leadership: %w", err)
	}

	return nil
}

// holdOffMargin covers the old leader's way from losing its lease to the
// address leaving its link.
const holdOffMargin = 50 * time.Millisecond

// becameLeader starts a leadership's hold-off. Raft allows one leader per
// term, but a leader of an older term can run on its lease (and hold the VIP)
// for up to leaderLeaseTimeout after a newer one is elected, e.g. when two
// candidates race. So a new leader waits that long, unless the Raft log says
// the leader of the term just before released the VIP and stepped down.
func (ctrl *Controller) becameLeader(st *run, now time.Time, sig *signals, logger *zap.Logger) {
	term := st.node.raft.CurrentTerm()
	holdOff := st.settings.LeaderLeaseTimeout + holdOffMargin

	st.leaderTerm, st.settled, st.settleAt = term, false, now.Add(holdOff)

	r, fsm := st.node.raft, st.node.fsm

	go func() {
		// The barrier applies every committed entry, the release marker included.
		if r.Barrier(holdOff).Error() == nil && fsm.releasedTerm.Load() == term-1 {
			logger.Info("previous leader released the VIP: taking over at once", zap.Uint64("term", term))

			select {
			case sig.released <- term:
			default:
			}
		}
	}()
}

// settle marks the leadership settled once its hold-off is over, and
// schedules a wake-up for when it will be.
func (ctrl *Controller) settle(st *run, sig *signals) {
	if st.state != raft.Leader.String() {
		st.settled = false

		return
	}

	if st.settled {
		return
	}

	if wait := time.Until(st.settleAt); wait > 0 {
		time.AfterFunc(wait, func() {
			select {
			case sig.wake <- struct{}{}:
			default:
			}
		})

		return
	}

	st.settled = true
}
