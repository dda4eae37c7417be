package lb

import (
	"net"
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

func sockopt(t *testing.T, c *net.TCPConn, level, name int) int {
	t.Helper()

	rc, err := c.SyscallConn()
	require.NoError(t, err)

	var (
		v    int
		oerr error
	)

	require.NoError(t, rc.Control(func(fd uintptr) { v, oerr = unix.GetsockoptInt(int(fd), level, name) })) //nolint:gosec
	require.NoError(t, oerr)

	return v
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

	var c *conn

	require.Eventually(t, func() bool {
		u := p.ups[0]
		u.conns.mu.Lock()
		defer u.conns.mu.Unlock()

		for k := range u.conns.m {
			c = k
		}

		return c != nil
	}, 30*time.Second, time.Millisecond)

	require.Eventually(t, func() bool {
		return sockopt(t, c.server, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) == 12000
	}, 30*time.Second, time.Millisecond, "the upstream leg never got its options")

	for leg, s := range map[string]*net.TCPConn{"client": c.client, "upstream": c.server} {
		assert.Equal(t, 1, sockopt(t, s, unix.SOL_SOCKET, unix.SO_KEEPALIVE), leg)
		assert.Equal(t, 7, sockopt(t, s, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE), leg)
		assert.Equal(t, 7, sockopt(t, s, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL), leg)
		assert.Equal(t, 12000, sockopt(t, s, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT), leg)
	}
}
