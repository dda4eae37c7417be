package lb

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/talos-lb/talos-lb/agent/health"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/nettest"
)

// sockopt reads an option of one leg of the proxy's only connection, or
// returns -1 while there is none.
func sockopt(t *testing.T, p *Proxy, side, level, name int) int {
	t.Helper()

	for _, l := range p.loops {
		l.mu.Lock()

		for _, s := range l.slots {
			if s.c == nil || s.c.fd[side] < 0 || !s.c.relaying {
				continue
			}

			v, err := unix.GetsockoptInt(s.c.fd[side], level, name)
			l.mu.Unlock()
			require.NoError(t, err)

			return v
		}

		l.mu.Unlock()
	}

	return -1
}

// Both legs must carry keepalive and TCP_USER_TIMEOUT. The client leg gets
// them by inheritance from the listener, a kernel behaviour this test pins
// down; the upstream leg once the connection has lasted a little.
func TestBothLegsCarryKeepaliveAndUserTimeout(t *testing.T) {
	upstreamOptionsDelay = time.Millisecond

	srv := nettest.Listen(t, func(net.Conn) {})

	spec := &resourcepb.ProxyConfigSpec{
		Listen: []string{"127.0.0.1:0"}, Upstreams: []string{srv.Addr()},
		HealthCheck:    &resourcepb.HealthCheckSpec{Kind: "tcp", Interval: durationpb.New(time.Hour), Timeout: durationpb.New(time.Second), Rise: 1, Fall: 1},
		ConnectTimeout: durationpb.New(5 * time.Second), DialTimeout: durationpb.New(time.Second),
		Keepalive: durationpb.New(7 * time.Second), UserTimeout: durationpb.New(12 * time.Second),
	}

	p := New(health.NetProber{}, func() {}, zaptest.NewLogger(t))
	require.NoError(t, p.Update(spec))
	t.Cleanup(p.Close)

	client, err := net.Dial("tcp", p.Stats().Listen[0])
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() }) //nolint:errcheck

	require.Eventually(t, func() bool {
		return sockopt(t, p, sideUpstream, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) == 12000
	}, 30*time.Second, time.Millisecond, "the upstream leg never got its options")

	for leg, side := range map[string]int{"client": sideClient, "upstream": sideUpstream} {
		assert.Equal(t, 1, sockopt(t, p, side, unix.SOL_SOCKET, unix.SO_KEEPALIVE), leg)
		assert.Equal(t, 7, sockopt(t, p, side, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE), leg)
		assert.Equal(t, 7, sockopt(t, p, side, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL), leg)
		assert.Equal(t, 12000, sockopt(t, p, side, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT), leg)
		// Relayed messages must not wait for Nagle on either leg.
		assert.Equal(t, 1, sockopt(t, p, side, unix.IPPROTO_TCP, unix.TCP_NODELAY), leg)
	}

	// The loopback leg has fixed buffers (doubled by the kernel, capped by
	// net.core.[rw]mem_max); the upstream leg's grow as it needs.
	for opt, limit := range map[int]string{unix.SO_SNDBUF: "wmem_max", unix.SO_RCVBUF: "rmem_max"} {
		b, err := os.ReadFile("/proc/sys/net/core/" + limit)
		require.NoError(t, err)

		capped, err := strconv.Atoi(strings.TrimSpace(string(b)))
		require.NoError(t, err)

		assert.Equal(t, 2*min(clientLegBuffer, capped), sockopt(t, p, sideClient, unix.SOL_SOCKET, opt), limit)
	}
}
