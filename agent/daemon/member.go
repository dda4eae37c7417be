package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/cosi-project/runtime/pkg/controller/runtime"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/talos-lb/talos-lb/agent/member"
	"github.com/talos-lb/talos-lb/pkg/config"
	"github.com/talos-lb/talos-lb/pkg/netutil"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// memberLeaveTimeout bounds telling the peers this agent leaves; the rest of
// the shutdown must fit in Talos's 10 s too.
const memberLeaveTimeout = 500 * time.Millisecond

// memberGossip is the liveness gossip (agent/member) when the config has a
// members section; without one, every method does nothing. It starts before
// the runtime, from the config the agent starts with (listen, advertise, keys
// and profile need a restart to change; the join list follows reloads), and
// leaves first thing on SIGTERM, so the peers see this node "left" at once
// and take over its L2 service IPs while the rest shuts down.
type memberGossip struct {
	gossip *member.Gossip
	ctrl   *member.Controller
	logger *zap.Logger
}

// startMembers starts the gossip. Call it after the push state was restored:
// the address pushed for this node is one way to choose what to advertise.
func startMembers(ctx context.Context, st state.State, cfg *config.Config, reg prometheus.Registerer, logger *zap.Logger) (*memberGossip, error) {
	m := &memberGossip{logger: logger}

	mc := cfg.Members
	if mc == nil {
		logger.Info("no members section: no liveness gossip, so no Member resources and no L2 failover of service IPs")

		return m, nil
	}

	var keys [][]byte

	if mc.SecretKeyFile != "" {
		var err error

		if keys, err = member.LoadKeys(mc.SecretKeyFile); err != nil {
			return nil, fmt.Errorf("members.secretKeyFile: %w", err)
		}
	}

	listen := mc.ListenAddrPort()

	advertise := mc.AdvertiseAddrPort()
	if !advertise.IsValid() {
		ip, how, err := member.ChooseAdvertise(advertiseInputs(ctx, st, cfg.Node.Name, listen.Addr()))
		if err != nil {
			return nil, err
		}

		advertise = netip.AddrPortFrom(ip, listen.Port())
		logger.Info("advertise address chosen", zap.Stringer("address", advertise), zap.String("from", how))
	}

	metrics := member.NewMetrics(reg)

	g, err := member.Start(member.Settings{
		Name: cfg.Node.Name, Bind: listen, Advertise: advertise, Keys: keys,
		Profile: string(mc.Profile), Logger: logger, Metrics: metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("members.listen %s: %w", mc.Listen, err)
	}

	m.gossip = g
	m.ctrl = &member.Controller{
		Gossip: g, Port: advertise.Port(), Join: mc.JoinAddrs(),
		Reload: member.ReloadFromFile(cfg.Node.Name), Metrics: metrics,
	}

	return m, nil
}

// advertiseInputs gathers what an unset members.advertise is chosen from.
func advertiseInputs(ctx context.Context, st state.State, node string, listen netip.Addr) member.AdvertiseInputs {
	in := member.AdvertiseInputs{
		Listen: listen,
		Route: func(family int) (netip.Addr, error) {
			// Documentation addresses: routed by the default route, if any.
			if family == 4 {
				return netutil.SourceFor(netip.MustParseAddr("192.0.2.1"))
			}

			return netutil.SourceFor(netip.MustParseAddr("2001:db8::1"))
		},
	}

	if n, err := safe.StateGetByID[*resources.PushedNode](ctx, st, node); err == nil {
		in.Pushed, _ = netip.ParseAddr(n.TypedSpec().Value.GetAddress()) //nolint:errcheck // invalid means none
	}

	in.Addresses, _ = netutil.NetlinkAddresses{}.Addresses() //nolint:errcheck // none: the other rules decide

	return in
}

// register adds the controller publishing Member resources and joining peers.
func (m *memberGossip) register(rt *runtime.Runtime) error {
	if m.ctrl == nil {
		return nil
	}

	if err := rt.RegisterController(m.ctrl); err != nil {
		return fmt.Errorf("registering controller %s: %w", m.ctrl.Name(), err)
	}

	return nil
}

// leave tells the peers this agent is going, then stops the gossip.
func (m *memberGossip) leave() {
	if m.gossip == nil {
		return
	}

	if err := m.gossip.Leave(memberLeaveTimeout); err != nil {
		m.logger.Warn("leaving the gossip; peers see this node dead within the detection time instead", zap.Error(err))
	}
}

// close stops the gossip without telling anyone (an error path); safe after leave.
func (m *memberGossip) close() {
	if m.gossip != nil {
		m.gossip.Shutdown() //nolint:errcheck // on the way out
	}
}
