package member_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/agent/member"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// fakeGossip is a member whose view the test sets and whose joins it records.
type fakeGossip struct {
	changes chan struct{}

	mu      sync.Mutex
	members []member.Status
	joins   []string
	refuse  map[string]bool
}

func newFakeGossip(members ...member.Status) *fakeGossip {
	return &fakeGossip{changes: make(chan struct{}, 1), members: members, refuse: map[string]bool{}}
}

func (f *fakeGossip) Self() string             { return "node-a" }
func (f *fakeGossip) Changes() <-chan struct{} { return f.changes }

func (f *fakeGossip) Snapshot() []member.Status {
	f.mu.Lock()
	defer f.mu.Unlock()

	return slices.Clone(f.members)
}

func (f *fakeGossip) Join(addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.joins = append(f.joins, addr)

	if f.refuse[addr] {
		return errors.New("connection refused")
	}

	return nil
}

func (f *fakeGossip) set(members ...member.Status) {
	f.mu.Lock()
	f.members = members
	f.mu.Unlock()

	select {
	case f.changes <- struct{}{}:
	default:
	}
}

func (f *fakeGossip) joined(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()

	n := 0

	for _, a := range f.joins {
		if a == addr {
			n++
		}
	}

	return n
}

// metric is the value of name{label=value} (the metric's only label).
func metric(t *testing.T, reg *prometheus.Registry, name, value string) float64 {
	t.Helper()

	families, err := reg.Gather()
	require.NoError(t, err)

	for _, f := range families {
		if f.GetName() != name {
			continue
		}

		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == value {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}

	return -1
}

var t0 = time.Now().Truncate(time.Second)

func self(state string) member.Status {
	return member.Status{Name: "node-a", Address: "10.0.0.1:7947", State: state, Since: t0, Self: true}
}

func peer(name, addr, state string, since time.Time) member.Status {
	return member.Status{Name: name, Address: addr, State: state, Since: since}
}

func pushedNode(name, addr string) *resources.PushedNode {
	n := resources.NewPushedNode(name)
	n.TypedSpec().Value = &resourcepb.NodeAddress{Name: name, Address: addr}

	return n
}

func TestMembersArePublished(t *testing.T) {
	g := newFakeGossip(self(member.StateAlive), peer("node-b", "10.0.0.2:7947", member.StateAlive, t0))
	reg := prometheus.NewRegistry()
	m := member.NewMetrics(reg)
	h := ctest.New(t, &member.Controller{Gossip: g, Port: 7947, Metrics: m})

	ctest.AssertResource(h, "node-a", func(r *resources.Member, a *assert.Assertions) {
		s := r.TypedSpec().Value
		a.Equal("10.0.0.1:7947", s.GetAddress())
		a.Equal(member.StateAlive, s.GetState())
		a.True(s.GetSelf())
		a.True(s.GetSince().AsTime().Equal(t0))
	})
	ctest.AssertResource(h, "node-b", func(r *resources.Member, a *assert.Assertions) {
		a.Equal(member.StateAlive, r.TypedSpec().Value.GetState())
		a.False(r.TypedSpec().Value.GetSelf())
	})

	later := t0.Add(time.Second)
	g.set(self(member.StateAlive), peer("node-b", "10.0.0.2:7947", member.StateDead, later))

	ctest.AssertResource(h, "node-b", func(r *resources.Member, a *assert.Assertions) {
		a.Equal(member.StateDead, r.TypedSpec().Value.GetState())
		a.True(r.TypedSpec().Value.GetSince().AsTime().Equal(later))
	})

	require.Eventually(t, func() bool {
		return metric(t, reg, "talos_lb_members", member.StateDead) == 1 && metric(t, reg, "talos_lb_members", member.StateAlive) == 1
	}, 5*time.Second, 10*time.Millisecond)

	// A member gossip no longer shows goes.
	g.set(self(member.StateLeft))
	ctest.AssertNoResource[*resources.Member](h, "node-b")
	ctest.AssertResource(h, "node-a", func(r *resources.Member, a *assert.Assertions) {
		a.Equal(member.StateLeft, r.TypedSpec().Value.GetState())
	})
}

func TestDeadMembersAreForgottenUnlessPushed(t *testing.T) {
	old := time.Now().Add(-time.Hour)
	g := newFakeGossip(self(member.StateAlive),
		peer("node-b", "10.0.0.2:7947", member.StateDead, old),
		peer("node-c", "10.0.0.3:7947", member.StateLeft, old),
		peer("node-d", "10.0.0.4:7947", member.StateDead, time.Now()),
	)
	h := ctest.New(t, &member.Controller{Gossip: g, Port: 7947, Forget: time.Minute, MaxBackoff: time.Hour})
	h.Create(pushedNode("node-b", "10.0.0.2"))

	ctest.AssertResource(h, "node-b", func(r *resources.Member, a *assert.Assertions) {
		a.Equal(member.StateDead, r.TypedSpec().Value.GetState(), "still pushed: kept")
	})
	ctest.AssertResource(h, "node-d", func(r *resources.Member, a *assert.Assertions) {
		a.Equal(member.StateDead, r.TypedSpec().Value.GetState(), "dead for less than Forget")
	})
	ctest.AssertNoResource[*resources.Member](h, "node-c")
}

func TestPushedNodesAreJoinedWithBackoff(t *testing.T) {
	g := newFakeGossip(self(member.StateAlive))
	g.refuse["10.0.0.3:7947"] = true

	reg := prometheus.NewRegistry()
	m := member.NewMetrics(reg)
	h := ctest.New(t, &member.Controller{Gossip: g, Port: 7947, Metrics: m, MinBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})

	h.Create(pushedNode("node-a", "10.0.0.1")) // ourselves: never joined
	h.Create(pushedNode("node-b", "10.0.0.2"))
	h.Create(pushedNode("node-c", "10.0.0.3"))

	// node-b answers but never shows up (another node name at that address):
	// retried after the longest delay only. node-c refuses: retried with backoff.
	require.Eventually(t, func() bool { return g.joined("10.0.0.3:7947") >= 4 }, 5*time.Second, 5*time.Millisecond)
	require.GreaterOrEqual(t, g.joined("10.0.0.2:7947"), 1)
	assert.Zero(t, g.joined("10.0.0.1:7947"))
	assert.Positive(t, metric(t, reg, "talos_lb_member_joins_total", member.JoinFailed))
	assert.Positive(t, metric(t, reg, "talos_lb_member_joins_total", member.JoinOK))

	// Both alive now: no more joins.
	g.set(self(member.StateAlive), peer("node-b", "10.0.0.2:7947", member.StateAlive, t0), peer("node-c", "10.0.0.3:7947", member.StateSuspect, t0))
	time.Sleep(100 * time.Millisecond)

	b, c := g.joined("10.0.0.2:7947"), g.joined("10.0.0.3:7947")

	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, b, g.joined("10.0.0.2:7947"))
	assert.Equal(t, c, g.joined("10.0.0.3:7947"))

	// node-c dies: joined again at once (a partition may have healed), and
	// the IPv6 node pushed later too.
	g.refuse["10.0.0.3:7947"] = false
	g.set(self(member.StateAlive), peer("node-b", "10.0.0.2:7947", member.StateAlive, t0), peer("node-c", "10.0.0.3:7947", member.StateDead, t0))
	h.Create(pushedNode("node-d", "fd00::4"))

	require.Eventually(t, func() bool { return g.joined("10.0.0.3:7947") > c && g.joined("[fd00::4]:7947") > 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestConfiguredAddressesAreJoinedAndReloaded(t *testing.T) {
	g := newFakeGossip(self(member.StateAlive))

	var (
		mu      sync.Mutex
		reloads []string
	)

	reload := func(_ context.Context, spec *resourcepb.AgentConfigSpec) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()

		reloads = append(reloads, spec.GetSha256())

		switch spec.GetSha256() {
		case "v2":
			return []string{"10.0.0.9:7947", "10.0.0.10:7947"}, nil
		case "v3":
			return nil, errors.New("file changed since")
		default:
			return []string{"10.0.0.8:7947", "10.0.0.1:7947"}, nil
		}
	}

	h := ctest.New(t, &member.Controller{
		Gossip: g, Port: 7947, Join: []string{"10.0.0.8:7947", "10.0.0.1:7947"}, Reload: reload,
		MinBackoff: time.Hour, MaxBackoff: time.Hour,
	})

	// At start, alone: the configured addresses but our own.
	require.Eventually(t, func() bool { return g.joined("10.0.0.8:7947") == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.Zero(t, g.joined("10.0.0.1:7947"))

	// In the cluster now; a new config adds addresses: joined once each.
	g.set(self(member.StateAlive), peer("node-b", "10.0.0.2:7947", member.StateAlive, t0))

	cfg := resources.NewAgentConfig()
	cfg.TypedSpec().Value.Sha256 = "v1"
	h.Create(cfg)

	cfg = resources.NewAgentConfig()
	cfg.TypedSpec().Value.Sha256 = "v2"
	h.Update(cfg)

	require.Eventually(t, func() bool {
		return g.joined("10.0.0.9:7947") == 1 && g.joined("10.0.0.10:7947") == 1
	}, 5*time.Second, 5*time.Millisecond)

	cfg = resources.NewAgentConfig()
	cfg.TypedSpec().Value.Sha256 = "v3"
	h.Update(cfg)

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()

		return slices.Contains(reloads, "v3")
	}, 5*time.Second, 5*time.Millisecond)

	assert.Equal(t, 1, g.joined("10.0.0.8:7947"), "not pending, not isolated: not joined again")
}
