package member

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// startGossip starts a member on a free loopback port, shut down at the end of the test.
func startGossip(tb testing.TB, name string, keys [][]byte) *Gossip {
	tb.Helper()

	lo := netip.MustParseAddr("127.0.0.1")

	g, err := Start(Settings{
		Name: name, Bind: netip.AddrPortFrom(lo, 0), Advertise: netip.AddrPortFrom(lo, 0),
		Keys: keys, Logger: zaptest.NewLogger(tb).Named(name),
	})
	require.NoError(tb, err)
	tb.Cleanup(func() { g.Shutdown() }) //nolint:errcheck // the test may have shut it down already

	return g
}

// stateOn is how g sees name ("" when it does not know it).
func stateOn(g *Gossip, name string) string {
	for _, m := range g.Snapshot() {
		if m.Name == name {
			return m.State
		}
	}

	return ""
}

// waitState waits until every observer sees name in state and returns, per
// observer, how long that took from start; it also says whether any observer
// showed the member suspect on the way.
func waitState(tb testing.TB, observers []*Gossip, name, state string, start time.Time, timeout time.Duration) (took []time.Duration, sawSuspect bool) {
	tb.Helper()

	took = make([]time.Duration, len(observers))
	deadline := time.Now().Add(timeout)

	for time.Now().Before(deadline) {
		done := true

		for i, o := range observers {
			s := stateOn(o, name)
			if s == StateSuspect {
				sawSuspect = true
			}

			if took[i] == 0 && s == state {
				took[i] = time.Since(start)
			}

			done = done && took[i] != 0
		}

		if done {
			return took, sawSuspect
		}

		time.Sleep(2 * time.Millisecond)
	}

	for _, o := range observers {
		tb.Logf("%s sees %+v", o.Self(), o.Snapshot())
	}

	tb.Fatalf("not every observer saw %s %s within %s", name, state, timeout)

	return nil, false
}

// cluster starts names and joins them all to the first one.
func cluster(tb testing.TB, keys [][]byte, names ...string) []*Gossip {
	tb.Helper()

	gs := make([]*Gossip, len(names))
	for i, n := range names {
		gs[i] = startGossip(tb, n, keys)
	}

	for _, g := range gs[1:] {
		require.NoError(tb, g.Join(gs[0].Address()))
	}

	for _, n := range names {
		waitState(tb, gs, n, StateAlive, time.Now(), 10*time.Second)
	}

	return gs
}

// TestDeadMemberDetected: a member that stops without leaving (a crash) is
// seen dead by the others. The detection time is logged, not asserted.
func TestDeadMemberDetected(t *testing.T) {
	gs := cluster(t, nil, "node-a", "node-b", "node-c")

	start := time.Now()

	require.NoError(t, gs[2].Shutdown())

	took, sawSuspect := waitState(t, gs[:2], "node-c", StateDead, start, 10*time.Second)
	t.Logf("crash of node-c seen dead after %v (suspect on the way: %v)", took, sawSuspect)

	// The survivors still see each other alive, and themselves as self.
	for _, g := range gs[:2] {
		snap := g.Snapshot()
		require.Len(t, snap, 3)

		for _, m := range snap {
			require.Equal(t, m.Name == g.Self(), m.Self, m.Name)

			if m.Name != "node-c" {
				require.Equal(t, StateAlive, m.State, "%s on %s", m.Name, g.Self())
			}
		}
	}
}

// TestLeaveIsSeenAtOnce: a member that leaves (SIGTERM) is seen "left" by
// the others within a gossip round or two, and says so itself first.
func TestLeaveIsSeenAtOnce(t *testing.T) {
	gs := cluster(t, nil, "node-a", "node-b", "node-c")

	start := time.Now()

	require.NoError(t, gs[2].Leave(500*time.Millisecond))
	require.Equal(t, StateLeft, stateOn(gs[2], "node-c"), "its own Member says left")

	took, _ := waitState(t, gs[:2], "node-c", StateLeft, start, 5*time.Second)
	t.Logf("node-c seen left after %v", took)

	require.ErrorIs(t, gs[2].Join(gs[0].Address()), ErrStopped)
}

// TestRestartedMemberIsAliveAgain: an agent that comes back under the same
// name (a new process, another port) rejoins and is alive again.
func TestRestartedMemberIsAliveAgain(t *testing.T) {
	gs := cluster(t, nil, "node-a", "node-b", "node-c")

	port := gs[2].Port()

	require.NoError(t, gs[2].Shutdown())
	waitState(t, gs[:2], "node-c", StateDead, time.Now(), 10*time.Second)

	// The same node, the same address, a new process that knows nothing.
	lo := netip.MustParseAddr("127.0.0.1")

	c, err := Start(Settings{Name: "node-c", Bind: netip.AddrPortFrom(lo, port), Advertise: netip.AddrPortFrom(lo, port), Logger: zaptest.NewLogger(t).Named("node-c")})
	require.NoError(t, err)
	t.Cleanup(func() { c.Shutdown() }) //nolint:errcheck // best effort

	start := time.Now()

	require.NoError(t, c.Join(gs[0].Address()))

	took, _ := waitState(t, append(gs[:2:2], c), "node-c", StateAlive, start, 15*time.Second)
	t.Logf("restarted node-c alive again after %v", took)
	waitState(t, []*Gossip{c}, "node-b", StateAlive, time.Now(), 5*time.Second)
}

func TestEncryptedGossip(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	next := []byte("fedcba9876543210")

	// A rotation half-way: a still encrypts with key, b already with next;
	// both decrypt both.
	a := startGossip(t, "node-a", [][]byte{key, next})
	b := startGossip(t, "node-b", [][]byte{next, key})
	require.NoError(t, b.Join(a.Address()))
	waitState(t, []*Gossip{a, b}, "node-b", StateAlive, time.Now(), 5*time.Second)
	waitState(t, []*Gossip{a, b}, "node-a", StateAlive, time.Now(), 5*time.Second)

	// Without a key a member holds, or in clear text, no join.
	require.Error(t, startGossip(t, "node-c", [][]byte{[]byte("0000000000000000")}).Join(a.Address()))
	require.Error(t, startGossip(t, "node-d", nil).Join(a.Address()))
	require.Empty(t, stateOn(a, "node-c"))
	require.Empty(t, stateOn(a, "node-d"))
}

// BenchmarkDeadDetection measures, per trial, how long after a crash (no
// Leave) the slowest of two survivors sees the third dead, over fresh
// 3-member clusters on loopback: go test -run XXX -bench DeadDetection -benchtime 10x ./agent/member
func BenchmarkDeadDetection(b *testing.B) {
	var trials []time.Duration

	for b.Loop() {
		b.StopTimer()

		gs := cluster(b, nil, "node-a", "node-b", "node-c")

		b.StartTimer()

		start := time.Now()

		require.NoError(b, gs[2].Shutdown())

		took, _ := waitState(b, gs[:2], "node-c", StateDead, start, 10*time.Second)
		trials = append(trials, slices.Max(took))

		b.StopTimer()

		for _, g := range gs[:2] {
			require.NoError(b, g.Shutdown())
		}

		b.StartTimer()
	}

	slices.Sort(trials)

	b.ReportMetric(float64(trials[len(trials)/2].Milliseconds()), "p50_ms")
	b.ReportMetric(float64(trials[(len(trials)*99-1)/100].Milliseconds()), "p99_ms")
}

func TestJoinError(t *testing.T) {
	require.Equal(t, "failed to join 10.0.0.2:7947: connection refused",
		joinError(errors.New("1 error occurred:\n\t* failed to join 10.0.0.2:7947: connection refused\n\n")))
	require.Equal(t, "plain", joinError(errors.New(" plain\n")))
}
