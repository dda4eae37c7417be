package member

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Membership is what the controller needs of a running member (Gossip), so
// it is tested without sockets.
type Membership interface {
	Self() string
	Snapshot() []Status
	Changes() <-chan struct{}
	// Join blocks until the state exchange with addr is done or failed.
	Join(addr string) error
}

// ReloadFunc returns the configured join addresses (host:port) of the config
// an AgentConfig describes, as the config changes.
type ReloadFunc func(ctx context.Context, spec *resourcepb.AgentConfigSpec) ([]string, error)

// Defaults of Controller.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
	DefaultForget     = 10 * time.Minute
	// maxJoinsInFlight bounds concurrent joins: one to an agent that is not
	// there can take the TCP timeout.
	maxJoinsInFlight = 4
)

// Controller publishes the gossip's view as Member resources and joins the
// pushed nodes (PushedNode) and the configured join addresses.
type Controller struct {
	Gossip Membership
	// Port is the gossip port of every agent: pushed nodes are joined on it.
	Port uint16
	// Join is the configured join list (host:port) the agent started with.
	Join []string
	// Reload re-reads the join list when AgentConfig changes; nil: never.
	Reload  ReloadFunc
	Metrics *Metrics
	// Forget is how long a dead or left member that is not a pushed node
	// stays published (DefaultForget).
	Forget time.Duration
	// MinBackoff and MaxBackoff space join retries (DefaultMinBackoff, DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Name implements controller.Controller.
func (ctrl *Controller) Name() string {
	return "member.Controller"
}

// Inputs implements controller.Controller.
func (ctrl *Controller) Inputs() []controller.Input {
	return []controller.Input{
		{Namespace: resources.ServiceNamespace, Type: resources.PushedNodeType, Kind: controller.InputWeak},
		{Namespace: resources.ConfigNamespace, Type: resources.AgentConfigType, ID: optional.Some(resources.AgentConfigID), Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller.
func (ctrl *Controller) Outputs() []controller.Output {
	return []controller.Output{{Type: resources.MemberType, Kind: controller.OutputExclusive}}
}

type joinResult struct {
	seed seed
	err  error
	took time.Duration
}

// run is the state of one Run.
type run struct {
	backoff  *backoff
	static   []string
	pending  map[string]bool
	sha      string
	inFlight int
	results  chan joinResult
	// pushed is the last pushed node list, name to address.
	pushed map[string]string
	// misnamed: pushed node name to the other name its agent gossips under, as last warned.
	misnamed map[string]string
}

// Run implements controller.Controller.
func (ctrl *Controller) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	now := ctrl.Now
	if now == nil {
		now = time.Now
	}

	st := &run{
		backoff: newBackoff(cmp(ctrl.MinBackoff, DefaultMinBackoff), cmp(ctrl.MaxBackoff, DefaultMaxBackoff)),
		static:  slices.Clone(ctrl.Join),
		pending: map[string]bool{},
		results: make(chan joinResult, maxJoinsInFlight),
	}

	for _, a := range ctrl.Join {
		st.pending[a] = true
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-ctrl.Gossip.Changes():
		case res := <-st.results:
			ctrl.joined(now(), st, res, logger)
		case <-timer.C:
		}

		if err := ctrl.reconcile(ctx, r, st, now(), logger); err != nil {
			return err
		}

		timer.Reset(untilNext(now(), st.backoff.next()))
	}
}

func cmp(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}

	return d
}

// untilNext is the timer's wait for the next due join; an hour when none waits.
func untilNext(now, next time.Time) time.Duration {
	if next.IsZero() {
		return time.Hour
	}

	return max(next.Sub(now), time.Millisecond)
}

func (ctrl *Controller) reconcile(ctx context.Context, r controller.Runtime, st *run, now time.Time, logger *zap.Logger) error {
	if err := ctrl.reloadJoin(ctx, r, st, logger); err != nil {
		return err
	}

	pushedList, err := safe.ReaderListAll[*resources.PushedNode](ctx, r)
	if err != nil {
		return fmt.Errorf("listing pushed nodes: %w", err)
	}

	st.pushed = make(map[string]string, pushedList.Len())
	for n := range pushedList.All() {
		st.pushed[n.Metadata().ID()] = n.TypedSpec().Value.GetAddress()
	}

	members := ctrl.Gossip.Snapshot()

	if err := ctrl.publish(ctx, r, members, st.pushed, now); err != nil {
		return err
	}

	wanted, misnamed := wantedSeeds(ctrl.Gossip.Self(), members, st.pushed, ctrl.Port, st.static, st.pending)

	for pushedName, gossipName := range misnamed {
		if st.misnamed[pushedName] != gossipName {
			logger.Warn("the agent of a pushed node gossips under another name: its node.name must be the Kubernetes node name, or L2 service IPs never see the node live",
				zap.String("pushed_node", pushedName), zap.String("gossip_name", gossipName), zap.String("address", st.pushed[pushedName]))
		}
	}

	st.misnamed = misnamed

	for _, s := range st.backoff.due(now, wanted) {
		if st.inFlight >= maxJoinsInFlight {
			// Its turn comes again with the next result.
			st.backoff.attempts[s.Address].inFlight = false

			continue
		}

		st.inFlight++

		go ctrl.join(ctx, s, st.results)
	}

	return nil
}

func (ctrl *Controller) join(ctx context.Context, s seed, results chan<- joinResult) {
	start := time.Now()
	err := ctrl.Gossip.Join(s.Address)

	select {
	case results <- joinResult{seed: s, err: err, took: time.Since(start)}:
	case <-ctx.Done():
	}
}

func (ctrl *Controller) joined(now time.Time, st *run, res joinResult, logger *zap.Logger) {
	st.inFlight--

	ctrl.Metrics.joined(res.err == nil)

	fields := []zap.Field{zap.String("address", res.seed.Address), zap.Duration("took", res.took)}
	if res.seed.Node != "" {
		fields = append(fields, zap.String("node", res.seed.Node))
	}

	first := st.backoff.done(now, res.seed.Address, res.err)

	if res.err == nil {
		delete(st.pending, res.seed.Address)
		logger.Info("joined", fields...)

		return
	}

	fields = append(fields, zap.Error(res.err))

	if first {
		logger.Info("join failed, retrying with backoff", fields...)
	} else {
		logger.Debug("join failed", fields...)
	}
}

// reloadJoin takes the join list of a changed config.
func (ctrl *Controller) reloadJoin(ctx context.Context, r controller.Runtime, st *run, logger *zap.Logger) error {
	if ctrl.Reload == nil {
		return nil
	}

	cfg, err := safe.ReaderGetByID[*resources.AgentConfig](ctx, r, resources.AgentConfigID)
	if err != nil {
		if state.IsNotFoundError(err) {
			return nil
		}

		return fmt.Errorf("reading agent config: %w", err)
	}

	spec := cfg.TypedSpec().Value
	if spec.GetSha256() == st.sha {
		return nil
	}

	join, err := ctrl.Reload(ctx, spec)
	if err != nil {
		// The file moved on since; the next AgentConfig brings it.
		logger.Debug("not reloading the join list", zap.Error(err))

		return nil
	}

	st.sha = spec.GetSha256()

	if slices.Equal(join, st.static) {
		return nil
	}

	logger.Info("join list changed", zap.Strings("join", join))

	st.static = join
	st.pending = map[string]bool{}

	for _, a := range join {
		st.pending[a] = true
	}

	return nil
}

// publish writes one Member per known node; dead or left members that are
// not pushed nodes go after Forget.
func (ctrl *Controller) publish(ctx context.Context, r controller.Runtime, members []Status, pushed map[string]string, now time.Time) error {
	forget := cmp(ctrl.Forget, DefaultForget)
	byState := map[string]int{}

	r.StartTrackingOutputs()

	for _, m := range members {
		if _, isPushed := pushed[m.Name]; !m.Self && !isPushed && !Live(m.State) && now.Sub(m.Since) > forget {
			continue
		}

		byState[m.State]++

		if err := safe.WriterModify(ctx, r, resources.NewMember(m.Name), func(res *resources.Member) error {
			s := res.TypedSpec().Value
			s.Address = m.Address
			s.State = m.State
			s.Self = m.Self

			if !s.GetSince().AsTime().Equal(m.Since) {
				s.Since = timestamppb.New(m.Since)
			}

			return nil
		}); err != nil {
			return fmt.Errorf("writing member %s: %w", m.Name, err)
		}
	}

	if err := r.CleanupOutputs(ctx, resources.NewMember("").Metadata()); err != nil {
		return fmt.Errorf("cleaning up members: %w", err)
	}

	ctrl.Metrics.published(byState)

	return nil
}
