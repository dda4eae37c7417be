package lb

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"

	"github.com/talos-lb/talos-lb/agent/health"
)

func up(addr, state string, latency time.Duration, local bool) *upstream {
	return &upstream{addr: addr, verdict: health.Verdict{State: state}, latency: latency, local: local}
}

func addrs(tier []*upstream) []string {
	var out []string
	for _, u := range tier {
		out = append(out, u.addr)
	}

	return out
}

func tiers(t *table) [][]string {
	var out [][]string
	for _, tier := range t.tiers {
		out = append(out, addrs(tier))
	}

	return out
}

func TestTiers(t *testing.T) {
	const (
		healthy   = health.StateHealthy
		unhealthy = health.StateUnhealthy
		unknown   = health.StateUnknown
	)

	ms := time.Millisecond

	for _, tc := range []struct {
		name string
		ups  []*upstream
		want [][]string
	}{
		{
			name: "the local API server wins even when its probes were slower",
			ups:  []*upstream{up("remote-1", healthy, ms, false), up("local", healthy, 3*ms, true), up("remote-2", healthy, ms, false)},
			want: [][]string{{"local"}, {"remote-1", "remote-2"}},
		},
		{
			name: "remote ones close in latency share the best tier",
			ups:  []*upstream{up("a", healthy, 2*ms, false), up("b", healthy, 3*ms, false), up("far", healthy, 40*ms, false)},
			want: [][]string{{"a", "b"}, {"far"}},
		},
		{
			name: "without the local one the remote ones take over",
			ups:  []*upstream{up("local", unhealthy, 0, true), up("a", healthy, ms, false), up("b", healthy, ms, false)},
			want: [][]string{{"a", "b"}},
		},
		{
			name: "never probed comes last, unhealthy never",
			ups:  []*upstream{up("new", unknown, 0, false), up("down", unhealthy, 0, false), up("a", healthy, ms, false)},
			want: [][]string{{"a"}, {"new"}},
		},
		{
			name: "all down: nothing to pick",
			ups:  []*upstream{up("a", unhealthy, 0, true), up("b", unhealthy, ms, false)},
			want: nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tiers(buildTable(tc.ups)))
		})
	}
}

func TestPickSkipsTriedAndFallsToTheNextTier(t *testing.T) {
	a, b, far := up("a", health.StateHealthy, time.Millisecond, false), up("b", health.StateHealthy, time.Millisecond, false), up("far", health.StateHealthy, time.Second, false)
	tbl := buildTable([]*upstream{a, b, far})

	assert.Same(t, a, tbl.pick(nil, 0, false))
	assert.Same(t, b, tbl.pick(nil, 1, false))
	assert.Same(t, b, tbl.pick([]*upstream{a}, 0, false))
	assert.Same(t, far, tbl.pick([]*upstream{a, b}, 0, false))
	assert.Nil(t, tbl.pick([]*upstream{a, b, far}, 0, false))

	// Least connections looks at active counts, round robin breaks ties.
	a.active.Store(2)
	assert.Same(t, b, tbl.pick(nil, 0, true))
	b.active.Store(5)
	assert.Same(t, a, tbl.pick(nil, 1, true))

	assert.True(t, tbl.preferred(a))
	assert.False(t, tbl.preferred(far))
}

func TestOnlyTheUpstreamsFaultEjectsIt(t *testing.T) {
	refused := &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", unix.ECONNREFUSED)}
	noFDs := &net.OpError{Op: "dial", Err: os.NewSyscallError("socket", unix.EMFILE)}
	noPorts := &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", unix.EADDRNOTAVAIL)}
	timeout := &net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}

	assert.True(t, upstreamsFault(refused, false))
	assert.True(t, upstreamsFault(timeout, true))
	assert.False(t, upstreamsFault(timeout, false), "a timeout on a budget cut short by earlier attempts")
	assert.False(t, upstreamsFault(noFDs, true))
	assert.False(t, upstreamsFault(noPorts, true))
}
