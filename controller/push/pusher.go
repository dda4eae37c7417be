// Package push delivers every node's desired state to its agent and tracks
// what each agent runs.
//
// The push is level triggered: the controller hands the pusher the full set
// of states (Set) whenever anything changes; a node whose state changed gets a
// new generation and is pushed, the others keep theirs. Every push carries the
// whole state, so a lost or repeated push is harmless. States are pushed again
// every Resync interval, so an agent that restarted, or one whose announcing
// list changed, is seen without a change of state.
//
// Nodes are independent: a bounded pool of workers pushes, each call has a
// timeout, a failing node retries with exponential backoff and jitter, and
// retries of unreachable agents get at most half the workers, so a dead agent
// never delays a live one.
package push

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// States of a node's push, as in AgentPush resources.
const (
	// StateSynced: the agent runs the desired generation.
	StateSynced = "synced"
	// StatePending: the desired generation is not acked yet.
	StatePending = "pending"
	// StateRejected: the agent refused the desired state or the call (LastError
	// says why: an invalid state, a certificate without the controller role, ...)
	// and runs its previous state.
	StateRejected = "rejected"
	// StateUnreachable: the last push got no answer: no connection, no answer
	// in time, TLS refused (LastError says why).
	StateUnreachable = "unreachable"
)

// States lists every state.
var States = []string{StateSynced, StatePending, StateRejected, StateUnreachable}

// Target is where a node's agent listens and what it should run.
type Target struct {
	// Address is host:port of the agent's API.
	Address string
	// State is the node's desired state. Its generation is ignored: the
	// pusher assigns it. Set takes ownership: neither the state nor the slices
	// it holds may change afterwards (different nodes may share them).
	State *resourcepb.NodeDesiredState
}

// Status is what the pusher knows of one node's agent.
type Status struct {
	Address           string
	DesiredGeneration uint64
	// AckedGeneration is the generation the agent said it runs (0: no answer yet).
	AckedGeneration uint64
	State           string
	LastError       string
	// LastAck is when the agent last accepted a push.
	LastAck time.Time
	// Announcing lists the service IPs the agent said it announces.
	Announcing []string
	ServiceIPs int
}

// Options configure a Pusher; zero values take the defaults.
type Options struct {
	// Identity names this controller replica in pushed states (NodeDesiredState.controller).
	Identity string
	// Workers bounds concurrent pushes (64).
	Workers int
	// Timeout bounds one push (5 s).
	Timeout time.Duration
	// BackoffMin and BackoffMax bound the wait before a failed node is retried (250 ms, 30 s).
	BackoffMin, BackoffMax time.Duration
	// Resync is how often an unchanged state is pushed again (30 s; negative: never).
	Resync time.Duration
	// Registry receives the metrics; nil: not exported.
	Registry prometheus.Registerer
}

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = 64
	}

	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}

	if o.BackoffMin <= 0 {
		o.BackoffMin = 250 * time.Millisecond
	}

	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(30*time.Second, o.BackoffMin)
	}

	if o.Resync == 0 {
		o.Resync = 30 * time.Second
	}
}

// Pusher pushes desired states to agents.
type Pusher struct {
	sender  Sender
	encoded EncodedSender // nil when sender cannot take encoded requests
	logger  *zap.Logger
	opts    Options
	metrics *metrics
	queue   *queue
	changes chan struct{}

	mu      sync.Mutex
	nodes   map[string]*node
	counts  map[string]int // nodes by state
	shared  map[sharedKey]*sharedPart
	lastGen uint64
	running bool
	stopped bool
}

type node struct {
	name    string
	address string
	msg     *resourcepb.NodeDesiredState // stamped: generation, node, controller
	shared  *sharedPart
	status  Status
	// failures counts consecutive pushes without acceptance, for the backoff.
	failures int
	timer    *time.Timer
}

// New makes a pusher; nothing is pushed before Run.
func New(sender Sender, logger *zap.Logger, opts Options) *Pusher {
	opts.defaults()

	if logger == nil {
		logger = zap.NewNop()
	}

	p := &Pusher{
		sender:  sender,
		logger:  logger,
		opts:    opts,
		metrics: newMetrics(opts.Registry),
		queue:   newQueue(opts.Workers / 2),
		changes: make(chan struct{}, 1),
		nodes:   map[string]*node{},
		counts:  map[string]int{},
		shared:  map[sharedKey]*sharedPart{},
		// Generations of a new controller (a restart, a new leader) start
		// above those of the previous one, whose pushes agents may still run.
		lastGen: uint64(time.Now().UnixMicro()), //nolint:gosec // after 1970
	}

	p.encoded, _ = sender.(EncodedSender)

	return p
}

// Changes receives a value after any Status changed; values coalesce.
func (p *Pusher) Changes() <-chan struct{} {
	return p.changes
}

func (p *Pusher) notify() {
	select {
	case p.changes <- struct{}{}:
	default:
	}
}

// Status returns every node's status, by node name.
func (p *Pusher) Status() map[string]Status {
	p.mu.Lock()
	defer p.mu.Unlock()

	out := make(map[string]Status, len(p.nodes))

	for name, n := range p.nodes {
		s := n.status
		s.Announcing = slices.Clone(s.Announcing)
		out[name] = s
	}

	return out
}

// nextGen returns a generation above every one handed out and above floor.
func (p *Pusher) nextGen(floor uint64) uint64 {
	p.lastGen = max(p.lastGen, floor) + 1

	return p.lastGen
}

// Set replaces the desired states: node name to target. A node whose state
// is equal to the last one keeps its generation; a changed one gets a new
// generation and is pushed; a node missing is dropped. It does not block on
// pushes.
func (p *Pusher) Set(targets map[string]Target) {
	p.mu.Lock()
	defer p.mu.Unlock()

	shared := make(map[sharedKey]*sharedPart, 1)
	equal := map[[2]*sharedPart]bool{}
	changed := false

	for name, t := range targets {
		s := t.State
		if s == nil {
			s = &resourcepb.NodeDesiredState{}
		}

		nodeName := s.GetNode()
		if nodeName == "" {
			nodeName = name
		}

		controller := s.GetController()
		if p.opts.Identity != "" {
			controller = p.opts.Identity
		}

		k := keyOf(s)

		sh := shared[k]
		if sh == nil {
			if sh = p.shared[k]; sh == nil {
				sh = newSharedPart(s)
			}

			shared[k] = sh
		}

		n := p.nodes[name]
		if n == nil {
			gen := p.nextGen(0)
			n = &node{name: name, address: t.Address, msg: stamp(s, nodeName, gen, controller), shared: sh}
			n.status = Status{Address: t.Address, DesiredGeneration: gen, State: StatePending, ServiceIPs: len(s.GetServiceIps())}
			p.nodes[name] = n
			p.count(StatePending, 1)
			p.queue.add(name, laneFresh)

			changed = true

			continue
		}

		moved := n.address != t.Address
		if moved {
			p.release(n.address, name)
			n.address, n.status.Address = t.Address, t.Address
			n.failures = 0
			changed = true
		}

		next := stamp(s, nodeName, n.msg.GetGeneration(), controller)

		if perNodeEqual(n.msg, next) && p.sharedEqual(n.shared, sh, equal) {
			// Same content: take the new slices (so the old ones can go) but keep the generation.
			n.msg, n.shared = next, sh

			if moved {
				p.pushNow(n)
			}

			continue
		}

		next.Generation = p.nextGen(n.msg.GetGeneration())
		n.msg, n.shared = next, sh
		n.status.DesiredGeneration = next.GetGeneration()
		n.status.ServiceIPs = len(s.GetServiceIps())

		if n.status.State == StateSynced {
			p.setState(n, StatePending)
		}

		// An unreachable agent gets the new state with its next retry.
		if moved || n.status.State != StateUnreachable {
			p.pushNow(n)
		}

		changed = true
	}

	for name, n := range p.nodes {
		if _, ok := targets[name]; ok {
			continue
		}

		p.stopTimer(n)
		p.queue.forget(name)
		p.count(n.status.State, -1)
		delete(p.nodes, name)
		p.release(n.address, name)

		changed = true
	}

	p.shared = shared

	if changed {
		p.notify()
	}
}

func (p *Pusher) sharedEqual(a, b *sharedPart, memo map[[2]*sharedPart]bool) bool {
	if a == b {
		return true
	}

	eq, ok := memo[[2]*sharedPart{a, b}]
	if !ok {
		eq = proto.Equal(a.msg, b.msg)
		memo[[2]*sharedPart{a, b}] = eq
	}

	return eq
}

// release lets the sender close what it holds for address once no other node uses it.
func (p *Pusher) release(address, except string) {
	f, ok := p.sender.(Forgetter)
	if !ok {
		return
	}

	for name, n := range p.nodes {
		if name != except && n.address == address {
			return
		}
	}

	f.Forget(address)
}

func (p *Pusher) stopTimer(n *node) {
	if n.timer != nil {
		n.timer.Stop()
		n.timer = nil
	}
}

func (p *Pusher) pushNow(n *node) {
	p.stopTimer(n)
	p.queue.add(n.name, laneFresh)
}

func (p *Pusher) pushAfter(n *node, d time.Duration, l lane) {
	p.stopTimer(n)

	name := n.name
	n.timer = time.AfterFunc(d, func() { p.queue.add(name, l) })
}

func (p *Pusher) setState(n *node, state string) {
	if n.status.State == state {
		return
	}

	p.count(n.status.State, -1)
	p.count(state, 1)
	n.status.State = state
}

func (p *Pusher) count(state string, delta int) {
	if p.counts[state] += delta; p.counts[state] == 0 {
		delete(p.counts, state)
	}

	if !p.stopped {
		p.metrics.nodes.WithLabelValues(state).Add(float64(delta))
	}
}

// Counts returns how many nodes are in each state (states without nodes are
// absent); much cheaper than Status for a thousand nodes.
func (p *Pusher) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()

	return maps.Clone(p.counts)
}

// Run pushes until ctx ends. On its way out it releases the sender's
// connections to its nodes (Forgetter).
func (p *Pusher) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()

		return errors.New("pusher already running")
	}

	p.running = true
	p.mu.Unlock()

	var wg sync.WaitGroup

	for range p.opts.Workers {
		wg.Go(func() {
			for {
				name, l, ok := p.queue.get()
				if !ok {
					return
				}

				p.push(ctx, name)
				p.queue.done(name, l)
			}
		})
	}

	<-ctx.Done()
	p.queue.close()
	wg.Wait()

	p.mu.Lock()
	defer p.mu.Unlock()

	forget, _ := p.sender.(Forgetter)

	for _, n := range p.nodes {
		p.stopTimer(n)

		// Connections go with the pusher; a sender used again reconnects.
		if forget != nil {
			forget.Forget(n.address)
		}
	}

	// A stopped pusher (a replica no longer leading) counts no nodes in the
	// metrics it may share with the next one.
	for state, n := range p.counts {
		p.metrics.nodes.WithLabelValues(state).Sub(float64(n))
	}

	p.stopped = true

	return nil
}

// push sends a node its current state and records the answer.
func (p *Pusher) push(ctx context.Context, name string) {
	p.mu.Lock()
	n := p.nodes[name]

	if n == nil {
		p.mu.Unlock()

		return
	}

	address, msg, shared := n.address, n.msg, n.shared
	p.mu.Unlock()

	callCtx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	start := time.Now()
	resp, err := p.send(callCtx, address, msg, shared)
	took := time.Since(start)

	cancel()

	if ctx.Err() != nil {
		return // stopping: no verdict on the agent
	}

	p.mu.Lock()
	defer p.mu.Unlock()

	if p.nodes[name] != n {
		return // removed meanwhile
	}

	p.metrics.latency.Observe(took.Seconds())

	before := n.status

	p.record(n, msg.GetGeneration(), resp, err)

	if !sameStatus(before, n.status) {
		p.notify()
	}
}

func (p *Pusher) send(ctx context.Context, address string, msg *resourcepb.NodeDesiredState, shared *sharedPart) (*agentpb.PushResponse, error) {
	if p.encoded == nil {
		return p.sender.Push(ctx, address, &agentpb.PushRequest{State: msg})
	}

	req, err := encodeRequest(msg, shared)
	if err != nil {
		return nil, err
	}

	return p.encoded.PushEncoded(ctx, address, req)
}

// record updates a node from the answer to a push of generation sent and
// schedules what comes next.
func (p *Pusher) record(n *node, sent uint64, resp *agentpb.PushResponse, err error) {
	desired := n.msg.GetGeneration() // may have moved on during the call: the queue pushes again then

	switch {
	case err != nil && answered(err):
		// The agent answered with an error rather than a verdict on the state:
		// the caller's role refused, an agent without Push, publishing failed.
		p.metrics.pushes.WithLabelValues(resultRejected).Inc()

		n.failures++
		n.status.LastError = err.Error()

		if n.status.State != StateRejected {
			p.logger.Warn("agent refused the push", zap.String("node", n.name), zap.String("address", n.address), zap.Error(err))
		}

		p.setState(n, StateRejected)
		p.pushAfter(n, retryDelay(n.failures, p.opts.BackoffMin, p.opts.BackoffMax), laneFresh)

	case err != nil:
		p.metrics.pushes.WithLabelValues(resultUnreachable).Inc()

		n.failures++
		n.status.LastError = err.Error()

		if n.status.State != StateUnreachable {
			p.logger.Warn("agent unreachable", zap.String("node", n.name), zap.String("address", n.address), zap.Error(err))
		}

		p.setState(n, StateUnreachable)
		p.pushAfter(n, retryDelay(n.failures, p.opts.BackoffMin, p.opts.BackoffMax), laneRetry)

	case resp.GetAccepted():
		p.metrics.pushes.WithLabelValues(resultAccepted).Inc()

		n.status.AckedGeneration = resp.GetGeneration()
		n.status.LastAck = time.Now()
		n.status.Announcing = resp.GetAnnouncing()
		n.status.LastError = ""

		if resp.GetGeneration() >= desired {
			if n.status.State != StateSynced && n.failures > 0 {
				p.logger.Info("agent synced again", zap.String("node", n.name), zap.Uint64("generation", resp.GetGeneration()))
			}

			n.failures = 0
			p.setState(n, StateSynced)

			if p.opts.Resync > 0 {
				p.pushAfter(n, jitter(p.opts.Resync), laneFresh)
			}

			return
		}

		p.setState(n, StatePending)

		if sent != desired {
			p.pushNow(n) // the state changed during the call
		} else {
			// Accepted, yet an older generation runs: should not happen; try again later.
			n.failures++
			n.status.LastError = "the agent accepted the push but runs an older generation"
			p.pushAfter(n, retryDelay(n.failures, p.opts.BackoffMin, p.opts.BackoffMax), laneFresh)
		}

	case resp.GetGeneration() >= sent:
		// Stale: the agent runs a generation at least as high (a previous
		// leader pushed it). Move above it and push again.
		p.metrics.pushes.WithLabelValues(resultStale).Inc()

		n.failures++
		n.status.AckedGeneration = resp.GetGeneration()
		n.status.LastError = resp.GetError()

		if desired <= resp.GetGeneration() {
			next := stamp(n.msg, n.msg.GetNode(), p.nextGen(resp.GetGeneration()), n.msg.GetController())
			n.msg = next
			n.status.DesiredGeneration = next.GetGeneration()

			p.logger.Info("agent runs a newer generation; pushing above it", zap.String("node", n.name),
				zap.Uint64("agent_generation", resp.GetGeneration()), zap.Uint64("generation", next.GetGeneration()))
		}

		p.setState(n, StatePending)

		// Once at once; a repeat means someone else keeps pushing: back off.
		if n.failures == 1 {
			p.pushNow(n)
		} else {
			p.pushAfter(n, retryDelay(n.failures-1, p.opts.BackoffMin, p.opts.BackoffMax), laneFresh)
		}

	default:
		p.metrics.pushes.WithLabelValues(resultRejected).Inc()

		n.failures++
		n.status.AckedGeneration = resp.GetGeneration()
		n.status.Announcing = resp.GetAnnouncing()
		n.status.LastError = resp.GetError()

		if sent != desired {
			p.pushNow(n) // the state changed during the call: perhaps fixed

			return
		}

		if n.status.State != StateRejected {
			p.logger.Warn("agent refused the pushed state", zap.String("node", n.name), zap.Uint64("generation", sent), zap.String("error", resp.GetError()))
		}

		p.setState(n, StateRejected)
		p.pushAfter(n, retryDelay(n.failures, p.opts.BackoffMin, p.opts.BackoffMax), laneFresh)
	}
}

// answered tells a gRPC error sent by a reachable agent from one about
// reaching it (no connection, no answer in time, TLS refused).
func answered(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}

	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown:
		return false
	default:
		return true
	}
}

func sameStatus(a, b Status) bool {
	return a.LastAck.Equal(b.LastAck) && a.Address == b.Address && a.DesiredGeneration == b.DesiredGeneration && a.AckedGeneration == b.AckedGeneration &&
		a.State == b.State && a.LastError == b.LastError && a.ServiceIPs == b.ServiceIPs && slices.Equal(a.Announcing, b.Announcing)
}

// retryDelay is the wait before attempt failures+1: it doubles from lo up to
// hi, and a random part of up to half of it spreads nodes that failed together.
func retryDelay(failures int, lo, hi time.Duration) time.Duration {
	d := hi
	if shift := failures - 1; shift < 32 {
		if b := lo << shift; b > 0 && b < hi {
			d = b
		}
	}

	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter needs no secure randomness
}

// jitter spreads resyncs over ±10% of d.
func jitter(d time.Duration) time.Duration {
	spread := d / 10

	return d - spread + rand.N(2*spread+1) //nolint:gosec // jitter needs no secure randomness
}
