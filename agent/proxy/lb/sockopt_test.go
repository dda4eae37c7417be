package lb

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
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
// them by inheritance from the listener, a kernel behaviour this test pins down.
func TestBothLegsCarryKeepaliveAndUserTimeout(t *testing.T) {
	upstream, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { upstream.Close() }) //nolint:errcheck

	spec := &resourcepb.ProxyConfigSpec{Keepalive: durationpb.New(7 * time.Second), UserTimeout: durationpb.New(12 * time.Second)}

	ln, err := listenTCP("127.0.0.1:0", sockOpts(spec))
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() }) //nolint:errcheck

	client, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr)) //nolint:forcetypeassert
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() }) //nolint:errcheck

	accepted, err := ln.AcceptTCP()
	require.NoError(t, err)
	t.Cleanup(func() { accepted.Close() }) //nolint:errcheck

	dialed, err := dial(upstream.Addr().String(), time.Second, spec)
	require.NoError(t, err)
	t.Cleanup(func() { dialed.Close() }) //nolint:errcheck

	for leg, c := range map[string]*net.TCPConn{"client": accepted, "upstream": dialed} {
		assert.Equal(t, 1, sockopt(t, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE), leg)
		assert.Equal(t, 7, sockopt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE), leg)
		assert.Equal(t, 7, sockopt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL), leg)
		assert.Equal(t, 12000, sockopt(t, c, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT), leg)
	}
}
