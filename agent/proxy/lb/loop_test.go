package lb

import (
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/talos-lb/talos-lb/agent/health"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/nettest"
)

func TestTimerHeapPopsInOrder(t *testing.T) {
	var h timerHeap

	var want []int64

	for range 200 {
		at := rand.Int64N(1000) //nolint:gosec // test data
		h.push(timer{at: at})
		want = append(want, at)
	}

	slices.Sort(want)

	var got []int64
	for len(h) > 0 {
		got = append(got, h.pop().at)
	}

	assert.Equal(t, want, got)
}

func TestKeyRoundTrip(t *testing.T) {
	k := makeKey(12345, genMask, 13, sideUpstream)
	assert.Equal(t, uint32(genMask), k.gen())
	assert.Equal(t, uint8(13&7), k.serial())
	assert.Equal(t, sideUpstream, k.side())
}

// Each loop has its own listening socket in the port's SO_REUSEPORT group,
// so the kernel spreads clients over the loops.
func TestClientsSpreadOverLoops(t *testing.T) {
	srv := nettest.Listen(t, func(c net.Conn) { c.Read(make([]byte, 1)) }) //nolint:errcheck

	p := New(health.NetProber{}, func() {}, zaptest.NewLogger(t))
	require.NoError(t, p.Update(&resourcepb.ProxyConfigSpec{
		Listen: []string{"127.0.0.1:0"}, Upstreams: []string{srv.Addr()},
		HealthCheck:    &resourcepb.HealthCheckSpec{Kind: "tcp", Interval: durationpb.New(time.Hour), Timeout: durationpb.New(time.Second), Rise: 1, Fall: 1},
		ConnectTimeout: durationpb.New(5 * time.Second), DialTimeout: durationpb.New(time.Second),
	}))
	t.Cleanup(p.Close)

	if len(p.loops) < 2 {
		t.Skip("one loop only (GOMAXPROCS=1)")
	}

	for range 32 {
		c, err := net.Dial("tcp", p.Stats().Listen[0])
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() }) //nolint:errcheck
	}

	require.Eventually(t, func() bool { return p.Stats().Active == 32 }, 30*time.Second, time.Millisecond)

	for i, l := range p.loops {
		l.mu.Lock()
		live := l.live
		l.mu.Unlock()

		assert.Positive(t, live, "loop %d has no client", i)
	}
}
