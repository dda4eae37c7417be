package push_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/controller/push"
)

// fakeAgent answers like agent/push would.
type fakeAgent struct {
	running  uint64
	down     bool   // refuses connections
	hang     bool   // never answers
	reject   string // refuses every state with this reason
	calls    int
	lastCall time.Time
	lastPush *resourcepb.NodeDesiredState
}

// fakeSender is the pusher's side effect, by address.
type fakeSender struct {
	mu        sync.Mutex
	agents    map[string]*fakeAgent
	forgotten []string
}

func newFakeSender() *fakeSender {
	return &fakeSender{agents: map[string]*fakeAgent{}}
}

func (f *fakeSender) agent(address string) *fakeAgent {
	f.mu.Lock()
	defer f.mu.Unlock()

	a, ok := f.agents[address]
	if !ok {
		a = &fakeAgent{}
		f.agents[address] = a
	}

	return a
}

func (f *fakeSender) with(address string, fn func(a *fakeAgent)) {
	a := f.agent(address)

	f.mu.Lock()
	defer f.mu.Unlock()

	fn(a)
}

func (f *fakeSender) calls(address string) int {
	var n int

	f.with(address, func(a *fakeAgent) { n = a.calls })

	return n
}

func (f *fakeSender) Push(ctx context.Context, address string, req *agentpb.PushRequest) (*agentpb.PushResponse, error) {
	a := f.agent(address)

	f.mu.Lock()
	a.calls++
	a.lastCall = time.Now()
	a.lastPush = req.GetState()
	hang, down := a.hang, a.down
	f.mu.Unlock()

	if hang {
		<-ctx.Done()

		return nil, status.FromContextError(ctx.Err()).Err()
	}

	if down {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}

	f.mu.Lock()
	defer f.mu.Unlock()

	s := req.GetState()

	switch {
	case s.GetGeneration() <= a.running && a.running != 0:
		if s.GetGeneration() == a.running {
			return &agentpb.PushResponse{Accepted: true, Generation: a.running}, nil
		}

		return &agentpb.PushResponse{Generation: a.running, Error: "older than the running generation"}, nil
	case a.reject != "":
		return &agentpb.PushResponse{Generation: a.running, Error: a.reject}, nil
	}

	a.running = s.GetGeneration()

	return &agentpb.PushResponse{Accepted: true, Generation: a.running, Announcing: []string{"192.0.2.1"}}, nil
}

func (f *fakeSender) Forget(address string) {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.forgotten = append(f.forgotten, address)
}

func state(ips ...string) *resourcepb.NodeDesiredState {
	s := &resourcepb.NodeDesiredState{}
	for _, ip := range ips {
		s.ServiceIps = append(s.ServiceIps, &resourcepb.ServiceIPSpec{Address: ip})
	}

	return s
}

func targets(n int, ips ...string) map[string]push.Target {
	out := map[string]push.Target{}
	for i := range n {
		out[fmt.Sprintf("node-%d", i)] = push.Target{Address: fmt.Sprintf("10.0.0.%d:50070", i), State: state(ips...)}
	}

	return out
}

type fixture struct {
	t      *testing.T
	p      *push.Pusher
	sender *fakeSender
	reg    *prometheus.Registry
}

func start(t *testing.T, opts push.Options) *fixture {
	t.Helper()

	if opts.Resync == 0 {
		opts.Resync = -1 // no pushes but those a test causes
	}

	if opts.BackoffMin == 0 {
		opts.BackoffMin, opts.BackoffMax = 10*time.Millisecond, 100*time.Millisecond
	}

	reg := prometheus.NewRegistry()
	opts.Registry = reg
	opts.Identity = "controller-0"

	sender := newFakeSender()
	p := push.New(sender, zaptest.NewLogger(t), opts)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)

	go func() { done <- p.Run(ctx) }()

	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	return &fixture{t: t, p: p, sender: sender, reg: reg}
}

// wait waits until cond holds for the statuses, watching Changes.
func (f *fixture) wait(what string, cond func(map[string]push.Status) bool) map[string]push.Status {
	f.t.Helper()

	deadline := time.After(20 * time.Second)

	for {
		st := f.p.Status()
		if cond(st) {
			return st
		}

		select {
		case <-f.p.Changes():
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			f.t.Fatalf("timed out waiting for %s: %+v", what, st)
		}
	}
}

func allSynced(st map[string]push.Status) bool {
	for _, s := range st {
		if s.State != push.StateSynced || s.AckedGeneration != s.DesiredGeneration {
			return false
		}
	}

	return true
}

func generations(st map[string]push.Status) map[string]uint64 {
	out := map[string]uint64{}
	for name, s := range st {
		out[name] = s.DesiredGeneration
	}

	return out
}

func (f *fixture) metric(name, label string) float64 {
	f.t.Helper()

	families, err := f.reg.Gather()
	require.NoError(f.t, err)

	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}

		for _, m := range fam.GetMetric() {
			if m.GetLabel()[0].GetValue() == label {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}

	return -1
}

func TestChangedNodesGetANewGenerationOthersKeepTheirs(t *testing.T) {
	before := uint64(time.Now().UnixMicro())
	f := start(t, push.Options{})

	f.p.Set(targets(3, "192.0.2.1"))

	st := f.wait("all synced", allSynced)
	require.Len(t, st, 3)

	first := generations(st)
	for name, g := range first {
		require.Greater(t, g, before, "generations start from the wall clock: %s", name)
		require.Equal(t, 1, f.sender.calls(st[name].Address))
		require.Equal(t, []string{"192.0.2.1"}, st[name].Announcing)
		require.Equal(t, 1, st[name].ServiceIPs)
		require.False(t, st[name].LastAck.IsZero())
	}

	// Equal states (new objects): nothing changes, nothing is pushed.
	f.p.Set(targets(3, "192.0.2.1"))
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, first, generations(f.p.Status()))

	for _, s := range st {
		require.Equal(t, 1, f.sender.calls(s.Address))
	}

	// One node changes: it alone gets a higher generation and a push.
	next := targets(3, "192.0.2.1")
	next["node-1"] = push.Target{Address: next["node-1"].Address, State: state("192.0.2.1", "192.0.2.2")}
	f.p.Set(next)

	st = f.wait("node-1 synced again", func(st map[string]push.Status) bool {
		return allSynced(st) && st["node-1"].DesiredGeneration != first["node-1"]
	})

	require.Greater(t, st["node-1"].DesiredGeneration, first["node-1"])
	require.Equal(t, first["node-0"], st["node-0"].DesiredGeneration)
	require.Equal(t, first["node-2"], st["node-2"].DesiredGeneration)
	require.Equal(t, 2, f.sender.calls(st["node-1"].Address))
	require.Equal(t, 1, f.sender.calls(st["node-0"].Address))
	require.Equal(t, 2, st["node-1"].ServiceIPs)

	f.sender.with(st["node-1"].Address, func(a *fakeAgent) {
		require.Equal(t, "node-1", a.lastPush.GetNode())
		require.Equal(t, "controller-0", a.lastPush.GetController())
		require.Len(t, a.lastPush.GetServiceIps(), 2)
	})

	require.Equal(t, 3.0, f.metric("talos_lb_controller_push_nodes", push.StateSynced))
	require.Equal(t, map[string]int{push.StateSynced: 3}, f.p.Counts())
	require.Equal(t, 4.0, f.metric("talos_lb_controller_pushes_total", "accepted"))
}

func TestSharedStateIsComparedNotJustItsSlices(t *testing.T) {
	f := start(t, push.Options{})

	shared := state("192.0.2.1", "192.0.2.2")
	build := func(shared *resourcepb.NodeDesiredState) map[string]push.Target {
		out := map[string]push.Target{}

		for i := range 4 {
			out[fmt.Sprintf("node-%d", i)] = push.Target{Address: fmt.Sprintf("10.0.0.%d:1", i), State: &resourcepb.NodeDesiredState{
				ServiceIps: shared.ServiceIps,
				BgpPeers:   []*resourcepb.PushedBgpPeer{{Peer: &resourcepb.BgpPeerSpec{Name: fmt.Sprintf("peer-%d", i)}}},
			}}
		}

		return out
	}

	f.p.Set(build(shared))
	first := generations(f.wait("synced", allSynced))

	// A fresh recompute: equal content in new slices.
	f.p.Set(build(state("192.0.2.1", "192.0.2.2")))
	require.Equal(t, first, generations(f.p.Status()))

	// A changed shared part changes every node.
	f.p.Set(build(state("192.0.2.1")))

	for name, g := range generations(f.p.Status()) {
		require.Greater(t, g, first[name])
	}

	f.wait("synced", allSynced)
}

func TestStaleRefusalMovesTheGenerationAboveTheAgents(t *testing.T) {
	f := start(t, push.Options{})

	// A previous leader pushed a much higher generation to node-1.
	far := uint64(time.Now().Add(time.Hour).UnixMicro())
	f.sender.with("10.0.0.1:50070", func(a *fakeAgent) { a.running = far })

	f.p.Set(targets(2, "192.0.2.1"))

	st := f.wait("all synced", allSynced)
	require.Greater(t, st["node-1"].DesiredGeneration, far)
	require.Equal(t, st["node-1"].DesiredGeneration, st["node-1"].AckedGeneration)
	require.Less(t, st["node-0"].DesiredGeneration, far)
	require.Equal(t, 2, f.sender.calls("10.0.0.1:50070"), "one refused, one accepted")
	require.Equal(t, 1.0, f.metric("talos_lb_controller_pushes_total", "stale"))

	// Later changes of node-1 keep growing from there.
	next := targets(2, "192.0.2.9")
	f.p.Set(next)
	require.Greater(t, f.p.Status()["node-1"].DesiredGeneration, st["node-1"].DesiredGeneration)
	f.wait("all synced", allSynced)
}

func TestUnreachableAgentIsRetriedWithBackoffUntilItIsBack(t *testing.T) {
	f := start(t, push.Options{BackoffMin: 20 * time.Millisecond, BackoffMax: 150 * time.Millisecond})

	addr := "10.0.0.0:50070"
	f.sender.with(addr, func(a *fakeAgent) { a.down = true })

	f.p.Set(targets(1, "192.0.2.1"))

	st := f.wait("unreachable", func(st map[string]push.Status) bool { return st["node-0"].State == push.StateUnreachable })
	require.Contains(t, st["node-0"].LastError, "connection refused")
	require.Zero(t, st["node-0"].AckedGeneration)

	// Backoff, not a hot loop: 20, 40, 80, 150, 150 ... ms at most (halved by jitter at least).
	time.Sleep(time.Second)

	calls := f.sender.calls(addr)
	require.GreaterOrEqual(t, calls, 5)
	require.LessOrEqual(t, calls, 20)

	// A change while unreachable waits for the next retry rather than adding pushes.
	f.p.Set(targets(1, "192.0.2.1", "192.0.2.2"))
	require.Equal(t, push.StateUnreachable, f.p.Status()["node-0"].State)

	f.sender.with(addr, func(a *fakeAgent) { a.down = false })

	st = f.wait("synced", allSynced)
	require.Empty(t, st["node-0"].LastError)
	require.Equal(t, 2, st["node-0"].ServiceIPs)
	require.GreaterOrEqual(t, f.metric("talos_lb_controller_pushes_total", "unreachable"), 5.0)
}

func TestRejectedStateIsShownAndReplacedByTheNextOne(t *testing.T) {
	f := start(t, push.Options{})

	f.p.Set(targets(1, "192.0.2.1"))
	good := f.wait("synced", allSynced)["node-0"]

	f.sender.with("10.0.0.0:50070", func(a *fakeAgent) { a.reject = "service_ips[1].address \"x\" is not an IP address" })
	f.p.Set(targets(1, "192.0.2.1", "x"))

	st := f.wait("rejected", func(st map[string]push.Status) bool { return st["node-0"].State == push.StateRejected })
	require.Equal(t, good.DesiredGeneration, st["node-0"].AckedGeneration, "the agent still runs the good one")
	require.Greater(t, st["node-0"].DesiredGeneration, good.DesiredGeneration)
	require.Contains(t, st["node-0"].LastError, "is not an IP address")

	f.sender.with("10.0.0.0:50070", func(a *fakeAgent) { a.reject = "" })
	f.p.Set(targets(1, "192.0.2.1", "192.0.2.2"))

	st = f.wait("synced", allSynced)
	require.Empty(t, st["node-0"].LastError)
}

func TestDeadAgentsDoNotDelayLiveOnes(t *testing.T) {
	f := start(t, push.Options{Workers: 8, Timeout: time.Minute})

	all := targets(104, "192.0.2.1")

	// Four agents never answer: they hold at most four of the eight workers.
	dead := map[string]bool{}
	for i := range 4 {
		name := fmt.Sprintf("node-%d", i*25)
		dead[name] = true
		f.sender.with(all[name].Address, func(a *fakeAgent) { a.hang = true })
	}

	f.p.Set(all)

	f.wait("live nodes synced", func(st map[string]push.Status) bool {
		for name, s := range st {
			if !dead[name] && s.State != push.StateSynced {
				return false
			}
		}

		return true
	})

	// The dead ones are still in their first call, far from its timeout.
	for name := range dead {
		require.Equal(t, push.StatePending, f.p.Status()[name].State)
	}
}

func TestAgentsTimingOutKeepToTheRetryLane(t *testing.T) {
	f := start(t, push.Options{Workers: 8, Timeout: 200 * time.Millisecond, BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})

	all := targets(116, "192.0.2.1")

	// More dead agents than workers, timing out again and again.
	for i := range 16 {
		f.sender.with(all[fmt.Sprintf("node-%d", 100+i)].Address, func(a *fakeAgent) { a.hang = true })
	}

	f.p.Set(all)

	unreachable := func(st map[string]push.Status) int {
		n := 0

		for _, s := range st {
			if s.State == push.StateUnreachable {
				n++
			}
		}

		return n
	}

	f.wait("dead ones unreachable", func(st map[string]push.Status) bool { return unreachable(st) == 16 })

	// Every live node changes; at most four workers are busy with retries.
	start := time.Now()

	f.p.Set(targets(116, "192.0.2.2"))
	f.wait("live nodes synced", func(st map[string]push.Status) bool {
		for _, s := range st {
			if s.State != push.StateSynced && s.State != push.StateUnreachable {
				return false
			}
		}

		return unreachable(st) == 16
	})

	// 100 instant pushes over four free workers; the dead agents' 200 ms
	// timeouts would add up to seconds if they took every worker.
	require.Less(t, time.Since(start), 2*time.Second)
}

func TestSetDropsNodesNoLongerPresent(t *testing.T) {
	f := start(t, push.Options{})

	f.p.Set(targets(3, "192.0.2.1"))
	f.wait("synced", allSynced)

	less := targets(3, "192.0.2.1")
	delete(less, "node-2")
	f.p.Set(less)

	st := f.p.Status()
	require.Len(t, st, 2)
	require.NotContains(t, st, "node-2")

	f.sender.mu.Lock()
	require.Equal(t, []string{"10.0.0.2:50070"}, f.sender.forgotten, "its connection is closed")
	f.sender.mu.Unlock()

	require.Equal(t, 2.0, f.metric("talos_lb_controller_push_nodes", push.StateSynced))
	require.Equal(t, 2, f.p.Counts()[push.StateSynced])

	// A moved node is pushed at its new address and the old one is let go.
	moved := targets(2, "192.0.2.1")
	moved["node-1"] = push.Target{Address: "10.0.1.1:50070", State: moved["node-1"].State}
	gen := st["node-1"].DesiredGeneration
	f.p.Set(moved)

	f.wait("moved node synced", func(st map[string]push.Status) bool {
		return allSynced(st) && f.sender.calls("10.0.1.1:50070") == 1
	})
	require.Equal(t, gen, f.p.Status()["node-1"].DesiredGeneration, "same state, same generation")

	f.sender.mu.Lock()
	require.Equal(t, []string{"10.0.0.2:50070", "10.0.0.1:50070"}, f.sender.forgotten)
	f.sender.mu.Unlock()
}

func TestResyncPushesTheSameGenerationAgain(t *testing.T) {
	f := start(t, push.Options{Resync: 50 * time.Millisecond})

	f.p.Set(targets(1, "192.0.2.1"))
	gen := f.wait("synced", allSynced)["node-0"].DesiredGeneration

	time.Sleep(500 * time.Millisecond)

	require.GreaterOrEqual(t, f.sender.calls("10.0.0.0:50070"), 4)
	require.Equal(t, gen, f.p.Status()["node-0"].DesiredGeneration)

	// An agent restarted without its state is filled again by the resync.
	f.sender.with("10.0.0.0:50070", func(a *fakeAgent) { a.running = 0; a.lastPush = nil })
	f.wait("refilled", func(map[string]push.Status) bool {
		var ok bool

		f.sender.with("10.0.0.0:50070", func(a *fakeAgent) { ok = a.running == gen })

		return ok
	})
}

func TestChangesCoalesce(t *testing.T) {
	f := start(t, push.Options{})

	f.p.Set(targets(50, "192.0.2.1"))
	f.wait("synced", allSynced)

	// Drain, then nothing more arrives without a change.
	select {
	case <-f.p.Changes():
	default:
	}

	select {
	case <-f.p.Changes():
		t.Fatal("a change notification without a change")
	case <-time.After(100 * time.Millisecond):
	}

	f.p.Set(targets(49, "192.0.2.1"))

	select {
	case <-f.p.Changes():
	case <-time.After(time.Second):
		t.Fatal("no notification after a node went away")
	}
}

func TestANewPusherSharesTheMetricsOfTheOneBefore(t *testing.T) {
	reg := prometheus.NewRegistry()

	for term := range 2 {
		sender := newFakeSender()
		p := push.New(sender, zaptest.NewLogger(t), push.Options{Registry: reg, Resync: -1})

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)

		go func() { done <- p.Run(ctx) }()

		p.Set(targets(3, "192.0.2.1"))

		for p.Counts()[push.StateSynced] != 3 {
			<-p.Changes()
		}

		f := &fixture{t: t, p: p, sender: sender, reg: reg}
		require.Equal(t, 3.0, f.metric("talos_lb_controller_push_nodes", push.StateSynced), "term %d", term)
		require.Equal(t, float64(3*(term+1)), f.metric("talos_lb_controller_pushes_total", "accepted"))

		cancel()
		require.NoError(t, <-done)
		require.Equal(t, 0.0, f.metric("talos_lb_controller_push_nodes", push.StateSynced), "a stopped pusher counts no nodes")
		require.ElementsMatch(t, []string{"10.0.0.0:50070", "10.0.0.1:50070", "10.0.0.2:50070"}, sender.forgotten, "nor holds connections")
	}
}
