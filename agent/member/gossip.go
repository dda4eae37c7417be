// Package member is the agents' liveness gossip: every agent runs a
// hashicorp/memberlist member named after its node, tuned to see a dead
// agent within about a second on a LAN, and publishes what it sees as one
// Member resource per known node (itself included, self=true). L2 ownership
// of service IPs (agent/l2svc) counts only live members, so a dead owner is
// replaced without the controller or Kubernetes.
//
// Gossip is the running member (memberlist, its callbacks, the view of the
// members); Controller publishes that view and joins the nodes the controller
// pushed and the configured join addresses, retrying with backoff.
package member

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// Settings configure a Gossip.
type Settings struct {
	// Name is the node name: the Kubernetes node name the controller pushes.
	Name string
	// Bind is where memberlist listens, UDP and TCP; port 0 picks a free one (tests).
	Bind netip.AddrPort
	// Advertise is the address other members reach this one on; its port 0
	// means Bind's port.
	Advertise netip.AddrPort
	// Keys encrypt the gossip (the first encrypts, all decrypt); none: clear text.
	Keys [][]byte
	// Profile is ProfileLAN (default) or ProfileWAN.
	Profile string
	Logger  *zap.Logger
	Metrics *Metrics
}

// Gossip is a running member.
type Gossip struct {
	ml     *memberlist.Memberlist
	table  *table
	logger *zap.Logger
	name   string
	meta   *delegate

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	mu       sync.Mutex
	shutdown bool
}

// Start creates the member, binds its ports and starts probing. It joins no
// one yet: see Join.
func Start(s Settings) (*Gossip, error) {
	if s.Name == "" {
		return nil, errors.New("member: no node name")
	}

	if s.Logger == nil {
		s.Logger = zap.NewNop()
	}

	c := baseConfig(s.Profile)
	c.Name = s.Name
	c.BindAddr = s.Bind.Addr().String()
	c.BindPort = int(s.Bind.Port())
	c.Label = Label

	if s.Advertise.IsValid() {
		c.AdvertiseAddr = s.Advertise.Addr().String()
		c.AdvertisePort = int(s.Advertise.Port())

		if c.AdvertisePort == 0 {
			c.AdvertisePort = c.BindPort
		}
	}

	kr, err := keyring(s.Keys)
	if err != nil {
		return nil, fmt.Errorf("member: gossip keys: %w", err)
	}

	c.Keyring = kr

	g := &Gossip{logger: s.Logger, name: s.Name, meta: &delegate{}, stop: make(chan struct{}), done: make(chan struct{})}
	g.table = newTable(s.Name, "", suspectFor(c), nil, s.Metrics.stateChanged)

	c.Logger = newLogger(s.Logger, g.table.suspect)
	c.Events = events{g.table}
	c.Ping = pings{g.table}
	c.Delegate = g.meta

	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("member: starting gossip on %s: %w", s.Bind, err)
	}

	g.ml = ml

	go g.expireSuspects()

	local := ml.LocalNode()
	s.Logger.Info("gossip started",
		zap.String("listen", netip.AddrPortFrom(s.Bind.Addr(), uint16(c.BindPort)).String()), //nolint:gosec // a port
		zap.String("advertise", local.Address()), zap.String("profile", profileName(s.Profile)),
		zap.Bool("encrypted", kr != nil))

	return g, nil
}

func profileName(p string) string {
	if p == ProfileWAN {
		return ProfileWAN
	}

	return ProfileLAN
}

// Self is this member's name.
func (g *Gossip) Self() string {
	return g.name
}

// Address is this member's advertised address, host:port.
func (g *Gossip) Address() string {
	for _, m := range g.table.snapshot() {
		if m.Self {
			return m.Address
		}
	}

	return ""
}

// Port is the port memberlist listens on.
func (g *Gossip) Port() uint16 {
	_, port, err := splitPort(g.Address())
	if err != nil {
		return 0
	}

	return port
}

// Snapshot returns every member this node knows of, itself included, by name.
func (g *Gossip) Snapshot() []Status {
	return g.table.snapshot()
}

// Changes receives a value (coalesced, never blocking the gossip) whenever
// Snapshot may have changed.
func (g *Gossip) Changes() <-chan struct{} {
	return g.table.changed
}

// ErrStopped is Join's error once the member left or was shut down.
var ErrStopped = errors.New("member: gossip stopped")

// Join contacts the member at addr (host:port) and exchanges the full state
// with it: after that both know each other and everyone the other knows.
// It blocks up to the profile's TCP timeout.
func (g *Gossip) Join(addr string) error {
	g.mu.Lock()
	stopped := g.shutdown
	g.mu.Unlock()

	if stopped {
		return ErrStopped
	}

	if _, err := g.ml.Join([]string{addr}); err != nil {
		return errors.New(joinError(err))
	}

	return nil
}

// joinError flattens memberlist's multi-error ("1 error occurred:\n\t* ...").
func joinError(err error) string {
	var parts []string

	for line := range strings.Lines(err.Error()) {
		line = strings.TrimSpace(line)
		if msg, ok := strings.CutPrefix(line, "* "); ok {
			parts = append(parts, msg)
		}
	}

	if len(parts) == 0 {
		return strings.TrimSpace(err.Error())
	}

	return strings.Join(parts, "; ")
}

// Leave tells the other members this one is going: they see it "left" at
// once instead of dead a second later. It first re-announces itself as
// leaving (memberlist's callbacks do not tell a departure from a death, the
// node's metadata does), then leaves, each step waiting at most timeout/2
// for the message to go out, then shuts down. This node's own Member says
// "left" before the others are told.
func (g *Gossip) Leave(timeout time.Duration) error {
	// Held while leaving: memberlist panics on a Leave after Shutdown.
	g.mu.Lock()

	if g.shutdown {
		g.mu.Unlock()

		return ErrStopped
	}

	g.table.left()
	g.meta.set(metaLeaving)

	start := time.Now()
	err := errors.Join(g.ml.UpdateNode(timeout/2), g.ml.Leave(timeout/2))

	g.mu.Unlock()

	g.logger.Info("left the gossip", zap.Duration("took", time.Since(start)), zap.Error(err))

	return errors.Join(err, g.Shutdown())
}

// Shutdown stops the member without telling anyone: the others see it dead
// after the failure detection time. It is safe to call more than once.
func (g *Gossip) Shutdown() error {
	g.mu.Lock()
	already := g.shutdown
	g.shutdown = true
	g.mu.Unlock()

	g.stopOnce.Do(func() { close(g.stop) })
	<-g.done

	if already {
		return nil
	}

	if err := g.ml.Shutdown(); err != nil {
		return fmt.Errorf("member: stopping gossip: %w", err)
	}

	return nil
}

// expireSuspects clears suspect marks memberlist must have dropped.
func (g *Gossip) expireSuspects() {
	defer close(g.done)

	const every = 100 * time.Millisecond

	ticker := time.NewTicker(every)
	defer ticker.Stop()

	for {
		select {
		case <-g.stop:
			return
		case <-ticker.C:
			g.table.expire()
		}
	}
}

// metaLeaving is a member's metadata once it is leaving.
const metaLeaving = "leaving"

// delegate gives memberlist this member's metadata; nothing else travels.
type delegate struct {
	mu   sync.Mutex
	meta []byte
}

func (d *delegate) set(meta string) {
	d.mu.Lock()
	defer d.mu.Unlock()

	d.meta = []byte(meta)
}

func (d *delegate) NodeMeta(int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()

	return slices.Clone(d.meta)
}

func (*delegate) NotifyMsg([]byte)                {}
func (*delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (*delegate) LocalState(bool) []byte          { return nil }
func (*delegate) MergeRemoteState([]byte, bool)   {}

// events feeds memberlist's membership callbacks to the table. They run
// under memberlist's lock with the node's public part only: its State field
// is never set (memberlist keeps the state elsewhere), so the callback says
// the state: a join or an update is alive, a leave is a death unless the
// node announced it was leaving.
type events struct{ t *table }

func (e events) NotifyJoin(n *memberlist.Node)   { e.t.observe(n.Name, n.Address(), StateAlive) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.t.observe(n.Name, n.Address(), StateAlive) }

func (e events) NotifyLeave(n *memberlist.Node) {
	state := StateDead
	if string(n.Meta) == metaLeaving {
		state = StateLeft
	}

	e.t.observe(n.Name, n.Address(), state)
}

// pings clears suspicion when a member answers a direct probe.
type pings struct{ t *table }

func (pings) AckPayload() []byte { return nil }

func (p pings) NotifyPingComplete(n *memberlist.Node, _ time.Duration, _ []byte) {
	p.t.acked(n.Name)
}

func splitPort(hostport string) (string, uint16, error) {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return "", 0, err //nolint:wrapcheck // internal
	}

	return ap.Addr().String(), ap.Port(), nil
}

// JoinAddress is the gossip address of an agent on host (an IP) with port.
func JoinAddress(host string, port uint16) string {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host + ":" + strconv.Itoa(int(port))
	}

	return netip.AddrPortFrom(ip.Unmap(), port).String()
}
