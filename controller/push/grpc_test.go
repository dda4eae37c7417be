package push_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/controller/push"
	"github.com/talos-lb/talos-lb/controller/push/pushtest"
	"github.com/talos-lb/talos-lb/pkg/pki"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

func newCA(tb testing.TB) *pki.KeyPair {
	tb.Helper()

	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		tb.Fatal(err)
	}

	return ca
}

func nodeNames(agents []pushtest.Agent) []string {
	out := make([]string, len(agents))
	for i, a := range agents {
		out[i] = a.Node
	}

	return out
}

// realTargets gives every agent the same shared part, as controller/desired
// does, and a per-node BGP peer.
func realTargets(agents []pushtest.Agent, shared *resourcepb.NodeDesiredState) map[string]push.Target {
	out := make(map[string]push.Target, len(agents))

	for i, a := range agents {
		out[a.Node] = push.Target{Address: a.Address, State: &resourcepb.NodeDesiredState{
			Node:              a.Node,
			ServiceIps:        shared.ServiceIps,
			ApiEndpoints:      shared.ApiEndpoints,
			NodeSets:          shared.NodeSets,
			BgpAdvertisements: shared.BgpAdvertisements,
			BgpPeers: []*resourcepb.PushedBgpPeer{{
				Peer:     &resourcepb.BgpPeerSpec{Name: "tor", Address: fmt.Sprintf("192.0.2.%d", 1+i%250), Asn: 65001},
				LocalAsn: 65000, Password: "s3cret",
			}},
		}}
	}

	return out
}

func runPusher(tb testing.TB, p *push.Pusher) (stop func()) {
	tb.Helper()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)

	go func() { done <- p.Run(ctx) }()

	stopped := false
	stop = func() {
		if !stopped {
			stopped = true

			cancel()

			if err := <-done; err != nil {
				tb.Error(err)
			}
		}
	}

	tb.Cleanup(stop)

	return stop
}

// waitFor waits until cond holds for the pusher's statuses.
func waitFor(tb testing.TB, p *push.Pusher, timeout time.Duration, what string, cond func(map[string]push.Status) bool) map[string]push.Status {
	tb.Helper()

	deadline := time.After(timeout)

	for {
		st := p.Status()
		if cond(st) {
			return st
		}

		select {
		case <-p.Changes():
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			tb.Fatalf("timed out waiting for %s: %+v", what, st)
		}
	}
}

func pushStatus(t *testing.T, a pushtest.Agent) *resourcepb.PushStatusSpec {
	t.Helper()

	r, err := safe.StateGetByID[*resources.PushStatus](t.Context(), a.State, resources.PushStatusID)
	require.NoError(t, err)

	return r.TypedSpec().Value
}

func serviceIPCount(t *testing.T, a pushtest.Agent) int {
	t.Helper()

	list, err := safe.StateListAll[*resources.ServiceIP](t.Context(), a.State)
	require.NoError(t, err)

	return list.Len()
}

func TestPushToManyRealAgents(t *testing.T) {
	ca := newCA(t)
	agents := pushtest.StartAgents(t, 50, ca)

	sender := push.NewGRPCSender(pushtest.ControllerTLS(t, ca))
	t.Cleanup(func() { require.NoError(t, sender.Close()) })

	p := push.New(sender, zaptest.NewLogger(t), push.Options{Identity: "controller-0", Resync: -1, Timeout: 10 * time.Second})
	runPusher(t, p)

	p.Set(realTargets(agents, pushtest.SharedState(nodeNames(agents), 20, 1)))

	st := waitFor(t, p, time.Minute, "every agent synced", allSynced)

	for _, a := range agents {
		ps := pushStatus(t, a)
		require.Equal(t, st[a.Node].DesiredGeneration, ps.GetGeneration(), a.Node)
		require.Equal(t, "controller-0", ps.GetController())
		require.Equal(t, uint32(20), ps.GetServiceIps())
		require.Equal(t, uint32(1), ps.GetBgpPeers())
		require.Equal(t, 20, serviceIPCount(t, a))

		peer, err := safe.StateGetByID[*resources.PushedBGPPeer](t.Context(), a.State, "tor")
		require.NoError(t, err)
		require.Empty(t, peer.TypedSpec().Value.GetPassword())
		require.NotEmpty(t, peer.TypedSpec().Value.GetPeer().GetPasswordFile())
	}

	// The shared part changes: every agent gets the new state.
	first := generations(st)

	p.Set(realTargets(agents, pushtest.SharedState(nodeNames(agents), 19, 2)))
	st = waitFor(t, p, time.Minute, "every agent synced again", func(st map[string]push.Status) bool {
		return allSynced(st) && st[agents[0].Node].DesiredGeneration != first[agents[0].Node]
	})

	for _, a := range agents {
		require.Greater(t, st[a.Node].DesiredGeneration, first[a.Node])
		require.Equal(t, 19, serviceIPCount(t, a), a.Node)
	}

	// One agent goes away: it shows as unreachable, the others stay synced with the next change.
	agents[7].Stop()
	p.Set(realTargets(agents, pushtest.SharedState(nodeNames(agents), 18, 3)))

	st = waitFor(t, p, time.Minute, "node 7 unreachable, the others synced", func(st map[string]push.Status) bool {
		for name, s := range st {
			if name == agents[7].Node {
				if s.State != push.StateUnreachable {
					return false
				}
			} else if s.State != push.StateSynced || s.AckedGeneration != s.DesiredGeneration {
				return false
			}
		}

		return true
	})

	require.NotEmpty(t, st[agents[7].Node].LastError)
	require.Equal(t, 19, serviceIPCount(t, agents[7]), "the stopped agent keeps what it had")
	require.Equal(t, 18, serviceIPCount(t, agents[8]))
}

func TestAgentRefusalTravelsBack(t *testing.T) {
	ca := newCA(t)
	agents := pushtest.StartAgents(t, 2, ca)

	sender := push.NewGRPCSender(pushtest.ControllerTLS(t, ca))
	t.Cleanup(func() { sender.Close() }) //nolint:errcheck

	p := push.New(sender, zaptest.NewLogger(t), push.Options{Resync: -1, BackoffMin: time.Second, BackoffMax: time.Second})
	runPusher(t, p)

	shared := pushtest.SharedState(nodeNames(agents), 3, 1)
	targets := realTargets(agents, shared)
	bad := targets[agents[1].Node]
	bad.State.ApiEndpoints = []string{"not an endpoint"}
	targets[agents[1].Node] = bad

	p.Set(targets)

	st := waitFor(t, p, time.Minute, "node 1 rejected", func(st map[string]push.Status) bool {
		return st[agents[0].Node].State == push.StateSynced && st[agents[1].Node].State == push.StateRejected
	})

	require.Contains(t, st[agents[1].Node].LastError, `api_endpoints[0] "not an endpoint": want host:port`)
	require.Zero(t, st[agents[1].Node].AckedGeneration, "the agent runs nothing yet")
	require.Equal(t, st[agents[1].Node].DesiredGeneration, pushStatus(t, agents[1]).GetRejectedGeneration())
}

func TestNewLeaderPushesAboveThePreviousOne(t *testing.T) {
	ca := newCA(t)
	agents := pushtest.StartAgents(t, 5, ca)
	shared := pushtest.SharedState(nodeNames(agents), 5, 1)

	newPusher := func(identity string) *push.Pusher {
		sender := push.NewGRPCSender(pushtest.ControllerTLS(t, ca))
		t.Cleanup(func() { sender.Close() }) //nolint:errcheck

		return push.New(sender, zaptest.NewLogger(t), push.Options{Identity: identity, Resync: -1})
	}

	// "old" started first, so its generations are lower; "new" pushed meanwhile.
	old := newPusher("old")

	time.Sleep(time.Millisecond)

	recent := newPusher("new")
	stopRecent := runPusher(t, recent)
	recent.Set(realTargets(agents, shared))
	waitFor(t, recent, time.Minute, "synced by new", allSynced)
	stopRecent()

	runPusher(t, old)
	old.Set(realTargets(agents, shared))

	st := waitFor(t, old, time.Minute, "synced by old", allSynced)

	for _, a := range agents {
		ps := pushStatus(t, a)
		require.Equal(t, "old", ps.GetController())
		require.Equal(t, st[a.Node].DesiredGeneration, ps.GetGeneration())
		require.Greater(t, ps.GetGeneration(), recent.Status()[a.Node].DesiredGeneration)
	}
}

// BenchmarkPushAll measures a full push: every node's state changes and the
// benchmark waits until every agent acked its new generation. push_all_ms is
// the mean time of one full push over warm connections; cold_push_all_ms is
// the first one, which also makes every connection (TLS handshakes).
func BenchmarkPushAll(b *testing.B) {
	for _, bc := range []struct {
		name       string
		nodes      int
		ips        int
		ackersOnly bool
	}{
		{"agents=1000/ips=10", 1000, 10, false},
		{"ackers=1000/ips=10000", 1000, 10000, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ca := newCA(b)

			var agents []pushtest.Agent
			if bc.ackersOnly {
				agents = pushtest.StartAckers(b, bc.nodes, ca)
			} else {
				agents = pushtest.StartAgents(b, bc.nodes, ca)
			}

			sender := push.NewGRPCSender(pushtest.ControllerTLS(b, ca))
			b.Cleanup(func() { sender.Close() }) //nolint:errcheck

			p := push.New(sender, zap.NewNop(), push.Options{Identity: "bench", Resync: -1, Timeout: 30 * time.Second})
			runPusher(b, p)

			names := nodeNames(agents)
			rev := 0

			pushAll := func() time.Duration {
				rev++
				targets := realTargets(agents, pushtest.SharedState(names, bc.ips, rev))

				start := time.Now()

				p.Set(targets)

				for p.Counts()[push.StateSynced] != len(agents) {
					<-p.Changes()
				}

				return time.Since(start)
			}

			cold := pushAll()

			var total time.Duration
			for b.Loop() {
				total += pushAll()
			}

			b.ReportMetric(float64(cold.Milliseconds()), "cold_push_all_ms")
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "push_all_ms")
		})
	}
}

func TestCallerWithoutTheControllerRoleIsShownAsRefused(t *testing.T) {
	ca := newCA(t)
	agents := pushtest.StartAgents(t, 1, ca)

	admin, err := ca.Issue(pki.IssueOptions{CommonName: "admin", Role: pki.RoleAdmin, Validity: time.Hour})
	require.NoError(t, err)

	adminTLS, err := pki.ClientTLS(ca.CertPEM, admin.CertPEM, admin.KeyPEM, pki.AgentServerName)
	require.NoError(t, err)

	// And a controller of another cluster: its TLS handshake fails.
	other := newCA(t)

	for _, tc := range []struct {
		name  string
		tls   *tls.Config
		state string
		err   string
	}{
		{"admin", adminTLS, push.StateRejected, "PermissionDenied"},
		{"foreign", pushtest.ControllerTLS(t, other), push.StateUnreachable, "Unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sender := push.NewGRPCSender(tc.tls)
			t.Cleanup(func() { sender.Close() }) //nolint:errcheck

			p := push.New(sender, zaptest.NewLogger(t), push.Options{Resync: -1, BackoffMin: time.Second, BackoffMax: time.Second})
			runPusher(t, p)

			p.Set(realTargets(agents, pushtest.SharedState(nodeNames(agents), 1, 1)))

			st := waitFor(t, p, time.Minute, tc.state, func(st map[string]push.Status) bool {
				return st[agents[0].Node].State == tc.state
			})

			require.Contains(t, st[agents[0].Node].LastError, tc.err)
			require.Zero(t, agents[0].Handler.Running())
		})
	}
}

func TestAckersAckLargeStates(t *testing.T) {
	ca := newCA(t)
	agents := pushtest.StartAckers(t, 20, ca)

	sender := push.NewGRPCSender(pushtest.ControllerTLS(t, ca))
	t.Cleanup(func() { sender.Close() }) //nolint:errcheck

	p := push.New(sender, zaptest.NewLogger(t), push.Options{Resync: -1})
	runPusher(t, p)

	p.Set(realTargets(agents, pushtest.SharedState(nodeNames(agents), 5000, 1)))

	st := waitFor(t, p, time.Minute, "every acker synced", allSynced)

	for _, a := range agents {
		require.Equal(t, st[a.Node].DesiredGeneration, a.Acker.Generation())

		count, size := a.Acker.Pushes()
		require.Equal(t, 1, count)
		require.Greater(t, size, 5000*20, "the whole state travelled")
	}
}
