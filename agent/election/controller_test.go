package election_test

import (
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/talos-lb/talos-lb/agent/election"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// network connects in-memory Raft transports, so the real Raft elects over fake wires.
type network struct {
	mu         sync.Mutex
	transports map[raft.ServerAddress]*raft.InmemTransport
}

func (n *network) factory(s election.Settings, _ io.Writer) (raft.Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()

	addr, t := raft.NewInmemTransport(raft.ServerAddress(s.Listen))
	n.transports[addr] = t

	for other, ot := range n.transports {
		if other != addr {
			t.Connect(other, ot)
			ot.Connect(addr, t)
		}
	}

	return t, nil
}

type member struct {
	name string
	h    *ctest.Harness
}

func startGroup(t *testing.T, names ...string) []*member {
	t.Helper()

	net := &network{transports: map[raft.ServerAddress]*raft.InmemTransport{}}

	var peers []*resourcepb.VipPeer
	for _, n := range names {
		peers = append(peers, &resourcepb.VipPeer{Name: n, Address: n + ":50071"})
	}

	var out []*member

	for _, n := range names {
		h := ctest.New(t, &election.Controller{Transport: net.factory, LogOutput: io.Discard})

		cfg := resources.NewVIPConfig()
		cfg.TypedSpec().Value = &resourcepb.VipConfigSpec{
			NodeName: n, StateDir: t.TempDir(), ElectionListen: n + ":50071", Peers: peers,
			HealthCheck:        "apiserver",
			HeartbeatTimeout:   durationpb.New(100 * time.Millisecond),
			LeaderLeaseTimeout: durationpb.New(50 * time.Millisecond),
		}
		h.Create(cfg)

		out = append(out, &member{name: n, h: h})
	}

	return out
}

// agreedLeader waits until every member names the same leader, and that leader says it leads.
func agreedLeader(t *testing.T, group []*member, not string) string {
	t.Helper()

	var leader string

	require.Eventually(t, func() bool {
		leaders := map[string]int{}
		leading := 0

		for _, m := range group {
			l, err := m.h.State.Get(m.h.Ctx(), resources.NewVIPLeadership().Metadata())
			if err != nil {
				return false
			}

			spec := l.(*resources.VIPLeadership).TypedSpec().Value
			leaders[spec.GetLeader()]++

			if spec.GetState() == "Leader" {
				leading++
			}
		}

		for name, n := range leaders {
			if name != "" && name != not && n == len(group) && leading == 1 {
				leader = name

				return true
			}
		}

		return false
	}, 15*time.Second, 20*time.Millisecond, "members never agreed on one leader")

	return leader
}

func find(group []*member, name string) *member {
	for _, m := range group {
		if m.name == name {
			return m
		}
	}

	panic(fmt.Sprintf("no member %s", name))
}

func TestOneLeaderIsElected(t *testing.T) {
	group := startGroup(t, "cp-1", "cp-2", "cp-3")
	leader := agreedLeader(t, group, "")

	ctest.AssertResource(find(group, leader).h, resources.ControlPlaneID, func(r *resources.VIPLeadership, a *assert.Assertions) {
		a.Len(r.TypedSpec().Value.GetPeers(), 3)
		a.Positive(r.TypedSpec().Value.GetTerm())
	})
}

func TestUnhealthyLeaderHandsLeadershipOver(t *testing.T) {
	group := startGroup(t, "cp-1", "cp-2", "cp-3")
	leader := agreedLeader(t, group, "")

	// The other members are healthy; the leader's API server fails.
	for _, m := range group {
		h := resources.NewEndpointHealth("apiserver")
		h.TypedSpec().Value.State = "healthy"

		if m.name == leader {
			h.TypedSpec().Value.State = "unhealthy"
		}

		m.h.Create(h)
	}

	next := agreedLeader(t, group, leader)
	require.NotEqual(t, leader, next)
}

func TestShutdownHandsLeadershipOver(t *testing.T) {
	group := startGroup(t, "cp-1", "cp-2", "cp-3")
	leader := agreedLeader(t, group, "")
	m := find(group, leader)

	lifecycle := resources.NewAgentLifecycle()
	lifecycle.TypedSpec().Value.ShuttingDown = true
	m.h.Create(lifecycle)

	ctest.AssertResource(m.h, resources.ControlPlaneID, func(r *resources.VIPLeadership, a *assert.Assertions) {
		a.True(r.TypedSpec().Value.GetSteppingDown())
		a.True(r.TypedSpec().Value.GetHandedOff())
	})

	rest := make([]*member, 0, 2)
	for _, o := range group {
		if o != m {
			rest = append(rest, o)
		}
	}

	require.NotEqual(t, leader, agreedLeader(t, rest, leader))
}
