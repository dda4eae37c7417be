package lb_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/talos-lb/talos-lb/agent/health"
	"github.com/talos-lb/talos-lb/agent/proxy/lb"
	"github.com/talos-lb/talos-lb/pkg/nettest"
)

func TestRoundRobinOverHealthyUpstreams(t *testing.T) {
	a, b, c := newUpstream(t, "a"), newUpstream(t, "b"), newUpstream(t, "c")
	p, addr := startProxy(t, health.NetProber{}, testSpec(a.addr, b.addr, c.addr))

	for _, u := range []*upstream{a, b, c} {
		waitState(t, p, u.addr, health.StateHealthy)
	}

	// Loopback upstreams share one latency tier, so all of them get clients.
	seen := spread(t, addr, 30)
	assert.Len(t, seen, 3, "clients per upstream: %v", seen)

	st := p.Stats()
	assert.True(t, st.Serving)
	assert.Equal(t, uint64(30), st.Total)
	assert.Zero(t, st.Refused)
}

func TestLeastConnectionsFillsTheEmptiestUpstream(t *testing.T) {
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	spec := testSpec(a.addr, b.addr)
	spec.Balance = "least-connections"
	p, addr := startProxy(t, health.NetProber{}, spec)

	waitState(t, p, a.addr, health.StateHealthy)
	waitState(t, p, b.addr, health.StateHealthy)

	seen := map[string]int{}

	for range 6 {
		c, err := connect(addr)
		require.NoError(t, err)
		t.Cleanup(c.Close)

		seen[c.upstream]++
	}

	assert.Equal(t, map[string]int{"a": 3, "b": 3}, seen)
}

func TestKilledUpstreamIsEjectedAndDialsRetried(t *testing.T) {
	a, b, c := newUpstream(t, "a"), newUpstream(t, "b"), newUpstream(t, "c")
	spec := testSpec(a.addr, b.addr, c.addr)
	// Probes that never run during the test: only the data path may notice.
	spec.HealthCheck.Interval = durationpb.New(time.Hour)
	spec.HealthCheck.Rise = 1
	p, addr := startProxy(t, health.NetProber{}, spec)

	for _, u := range []*upstream{a, b, c} {
		waitState(t, p, u.addr, health.StateHealthy)
	}

	held, err := connect(addr)
	require.NoError(t, err)

	b.kill()

	// Every client still reaches an upstream: the refused dial to b is retried.
	seen := spread(t, addr, 30)
	assert.Zero(t, seen["b"])
	assert.Positive(t, seen["a"])
	assert.Positive(t, seen["c"])

	down := waitState(t, p, b.addr, health.StateUnhealthy)
	assert.Contains(t, down.LastError, "connection refused")
	assert.Equal(t, uint64(1), down.FailedDials)

	st := p.Stats()
	assert.Equal(t, uint64(1), st.FailedDials)
	assert.Equal(t, uint64(1), st.Retries)
	assert.Zero(t, st.Refused)

	// A client that was on b sees its reset; the others carry on.
	if held.upstream == "b" {
		require.Error(t, held.echo("x"))
	} else {
		require.NoError(t, held.echo("x"))
	}
}

func TestReadyzFailureEjectsAnUpstreamThatStillAcceptsTCP(t *testing.T) {
	var (
		sick   atomic.Bool
		served sync.Map
	)

	servers := map[string]*httptest.Server{}

	for _, name := range []string{"a", "b"} {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/readyz" {
				if name == "a" && sick.Load() {
					http.Error(w, "[-]etcd failed", http.StatusInternalServerError)

					return
				}

				w.WriteHeader(http.StatusOK)

				return
			}

			n, _ := served.LoadOrStore(name, new(atomic.Int64))
			n.(*atomic.Int64).Add(1) //nolint:forcetypeassert
		}))
		t.Cleanup(srv.Close)

		servers[name] = srv
	}

	// Both test servers share one certificate.
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: servers["a"].Certificate().Raw}), 0o600))

	addrA, addrB := servers["a"].Listener.Addr().String(), servers["b"].Listener.Addr().String()
	spec := testSpec(addrA, addrB)
	spec.HealthCheck.Kind = "https"
	spec.HealthCheck.Path = "/readyz"
	spec.HealthCheck.CaFile = caFile
	spec.HealthCheck.ServerName = "example.com"
	p, addr := startProxy(t, health.NetProber{}, spec)

	waitState(t, p, addrA, health.StateHealthy)
	waitState(t, p, addrB, health.StateHealthy)

	sick.Store(true)

	down := waitState(t, p, addrA, health.StateUnhealthy)
	assert.Equal(t, "HTTP 500: [-]etcd failed", down.LastError)

	// The proxy is TCP: a client speaks TLS to whichever server it reaches.
	httpClient := servers["a"].Client()
	httpClient.Transport.(*http.Transport).DisableKeepAlives = true //nolint:forcetypeassert

	for range 10 {
		resp, err := httpClient.Get("https://" + addr + "/work")
		require.NoError(t, err)
		resp.Body.Close() //nolint:errcheck
	}

	_, toA := served.Load("a")
	assert.False(t, toA, "a client reached the upstream whose /readyz fails")
	assert.Zero(t, p.Stats().FailedDials, "a was left by its probe, not by a failed dial")
}

func TestAllUpstreamsDownRefusesAtOnce(t *testing.T) {
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	p, addr := startProxy(t, health.NetProber{}, testSpec(a.addr, b.addr))

	waitState(t, p, a.addr, health.StateHealthy)
	waitState(t, p, b.addr, health.StateHealthy)

	a.kill()
	b.kill()

	waitState(t, p, a.addr, health.StateUnhealthy)
	waitState(t, p, b.addr, health.StateUnhealthy)
	require.False(t, p.Stats().Serving)

	_, err := connect(addr)
	require.Error(t, err)
	assert.True(t, errors.Is(err, syscall.ECONNRESET), "want a reset, got %v", err)

	st := p.Stats()
	assert.Equal(t, uint64(1), st.Refused)
	assert.Zero(t, st.FailedDials, "no upstream is dialled once all are known down")
}

func TestUpstreamSetChangeUnderLoadDropsNoConnection(t *testing.T) {
	a, b, c := newUpstream(t, "a"), newUpstream(t, "b"), newUpstream(t, "c")
	spec := testSpec(a.addr, b.addr)
	p, addr := startProxy(t, health.NetProber{}, spec)

	waitState(t, p, a.addr, health.StateHealthy)
	waitState(t, p, b.addr, health.StateHealthy)

	var held []*client

	for range 10 {
		cl, err := connect(addr)
		require.NoError(t, err)
		t.Cleanup(cl.Close)

		held = append(held, cl)
	}

	// Clients keep connecting and talking while the set moves from {a, b} to {b, c} to {c}.
	ctx, stop := context.WithCancel(t.Context())

	var (
		wg       sync.WaitGroup
		failures atomic.Int64
		done     atomic.Int64
	)

	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				cl, err := connect(addr)
				if err == nil {
					err = cl.echo("ping")
					cl.Close()
				}

				if err != nil {
					failures.Add(1)
				}

				done.Add(1)
			}
		})
	}

	next := testSpec(b.addr, c.addr)
	next.Listen = spec.Listen
	require.NoError(t, p.Update(next))
	waitState(t, p, c.addr, health.StateHealthy)

	last := testSpec(c.addr)
	require.NoError(t, p.Update(last))

	require.Eventually(t, func() bool { return done.Load() > 200 }, 30*time.Second, time.Millisecond)
	stop()
	wg.Wait()

	assert.Zero(t, failures.Load(), "client-visible failures")

	for _, cl := range held {
		require.NoError(t, cl.echo("still here"), "connection to %s", cl.upstream)
	}

	// The removed upstreams drain with their connections; new clients go to c only.
	st := p.Stats()
	require.Len(t, st.Upstreams, 3)
	assert.Equal(t, c.addr, st.Upstreams[0].Address)
	assert.Equal(t, lb.StateDraining, st.Upstreams[1].State)
	assert.Equal(t, lb.StateDraining, st.Upstreams[2].State)
	assert.Equal(t, map[string]int{"c": 5}, spread(t, addr, 5))
}

func TestLongLivedStreamSurvivesOtherUpstreamsFailing(t *testing.T) {
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	p, addr := startProxy(t, health.NetProber{}, testSpec(a.addr, b.addr))

	waitState(t, p, a.addr, health.StateHealthy)
	waitState(t, p, b.addr, health.StateHealthy)

	var stream *client

	for stream == nil {
		cl, err := connect(addr)
		require.NoError(t, err)

		if cl.upstream == "a" {
			stream = cl
		} else {
			cl.Close()
		}
	}

	t.Cleanup(stream.Close)

	b.kill()
	waitState(t, p, b.addr, health.StateUnhealthy)
	require.NoError(t, stream.echo("watch event 1"))

	b2 := newUpstream(t, "b2")
	next := testSpec(a.addr, b2.addr)
	require.NoError(t, p.Update(next))
	waitState(t, p, b2.addr, health.StateHealthy)
	require.NoError(t, stream.echo("watch event 2"))
}

func TestDrainPeriodEndsConnectionsOfRemovedUpstream(t *testing.T) {
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	spec := testSpec(a.addr)
	spec.DrainPeriod = durationpb.New(50 * time.Millisecond)
	p, addr := startProxy(t, health.NetProber{}, spec)

	cl, err := connect(addr)
	require.NoError(t, err)
	require.Equal(t, "a", cl.upstream)

	next := testSpec(b.addr)
	next.DrainPeriod = spec.DrainPeriod
	require.NoError(t, p.Update(next))

	// Not timed: the read blocks until the drain ends the connection.
	_, err = cl.r.ReadString('\n')
	require.Error(t, err)

	require.Eventually(t, func() bool { return len(p.Stats().Upstreams) == 1 }, 30*time.Second, 5*time.Millisecond)
}

func TestBindErrorIsReported(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { taken.Close() }) //nolint:errcheck

	a := newUpstream(t, "a")
	spec := testSpec(a.addr)
	spec.Listen = []string{taken.Addr().String(), "127.0.0.1:0"}

	p := lb.New(health.NetProber{}, func() {}, zaptest.NewLogger(t))
	t.Cleanup(p.Close)

	err = p.Update(spec)
	require.ErrorIs(t, err, syscall.EADDRINUSE)

	st := p.Stats()
	require.ErrorIs(t, st.BindError, syscall.EADDRINUSE)
	assert.Len(t, st.Listen, 1, "the free address is served anyway")
}

// Large transfers take the splice path; small ones the buffered one. Both
// must deliver every byte in order, and a half-close must travel through.
func TestBulkAndSmallWritesArriveIntactBothWays(t *testing.T) {
	a := newUpstream(t, "a")
	p, addr := startProxy(t, health.NetProber{}, testSpec(a.addr))
	waitState(t, p, a.addr, health.StateHealthy)

	cl, err := connect(addr)
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	payload := make([]byte, 12<<20+7)
	_, err = rand.Read(payload)
	require.NoError(t, err)

	go func() {
		// Small writes first, then one large one, then the half-close.
		for i := range 100 {
			cl.conn.Write(payload[i*10 : (i+1)*10]) //nolint:errcheck // the read side checks
		}

		cl.conn.Write(payload[1000:])       //nolint:errcheck
		cl.conn.(*net.TCPConn).CloseWrite() //nolint:errcheck,forcetypeassert
	}()

	got, err := io.ReadAll(cl.r)
	require.NoError(t, err, "the upstream's close after our half-close ends the stream cleanly")
	require.True(t, bytes.Equal(payload, got), "echoed %d of %d bytes, equal prefix %d", len(got), len(payload), commonPrefix(payload, got))
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}

	return n
}

func TestListensOnIPv4AndIPv6Loopback(t *testing.T) {
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		ln.Close() //nolint:errcheck
	}

	a := newUpstream(t, "a")
	spec := testSpec(a.addr)
	spec.Listen = []string{"127.0.0.1:0", "[::1]:0"}

	p := lb.New(health.NetProber{}, func() {}, zaptest.NewLogger(t))
	require.NoError(t, p.Update(spec))
	t.Cleanup(p.Close)

	listen := p.Stats().Listen
	require.Len(t, listen, 2)

	for _, addr := range listen {
		c, err := connect(addr)
		require.NoError(t, err, addr)
		assert.Equal(t, "a", c.upstream)
		c.Close()
	}
}

// An upstream given by host name is resolved at each dial, off the relay loop.
func TestHostNameUpstream(t *testing.T) {
	a := newUpstream(t, "a")
	_, port, err := net.SplitHostPort(a.addr)
	require.NoError(t, err)

	named := net.JoinHostPort("localhost", port)
	p, addr := startProxy(t, health.NetProber{}, testSpec(named))
	waitState(t, p, named, health.StateHealthy)

	assert.Equal(t, map[string]int{"a": 3}, spread(t, addr, 3))
	assert.Equal(t, uint64(3), p.Stats().Upstreams[0].Total)
}

// A listener dropped from the spec stops accepting at once, its port is free
// for the next Update, and connections it accepted carry on.
func TestRemovedListenerStopsAcceptingButKeepsItsClients(t *testing.T) {
	a := newUpstream(t, "a")
	spec := testSpec(a.addr)
	p, addr := startProxy(t, health.NetProber{}, spec)

	c, err := connect(addr)
	require.NoError(t, err)
	t.Cleanup(c.Close)

	other := proto.CloneOf(spec)
	other.Listen = []string{"127.0.0.2:0"}
	require.NoError(t, p.Update(other))
	require.NotEqual(t, []string{addr}, p.Stats().Listen)

	_, err = net.DialTimeout("tcp", addr, 5*time.Second)
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "the old address still accepts")
	require.NoError(t, c.echo("still here"))

	other.Listen = []string{addr}
	require.NoError(t, p.Update(other), "the old port must be free again")

	back, err := connect(addr)
	require.NoError(t, err)
	back.Close()
	require.NoError(t, c.echo("and still"))
}

// Accept failing for want of file descriptors leaves clients in the
// backlog; nothing edge-triggered would wake the loop for them, so it must
// try again by itself once descriptors are free.
func TestAcceptRetriesAfterRunningOutOfFiles(t *testing.T) {
	a := newUpstream(t, "a")
	spec := testSpec(a.addr)
	spec.HealthCheck.Interval = durationpb.New(time.Hour) // probes would fail too
	spec.HealthCheck.Rise, spec.HealthCheck.Fall = 1, 1
	p, addr := startProxy(t, health.NetProber{}, spec)
	waitState(t, p, a.addr, "healthy")

	var limit syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit))
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit) }) //nolint:errcheck

	// The client's socket exists before the limit drops; its connect needs
	// no new descriptor and completes in the proxy's backlog.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)

	f := os.NewFile(uintptr(fd), "client") //nolint:gosec // fds are small
	t.Cleanup(func() { f.Close() })        //nolint:errcheck

	// The kernel gives the lowest free number; a limit at it leaves accept none.
	probe, err := os.Open(os.DevNull)
	require.NoError(t, err)

	low := limit
	low.Cur = uint64(probe.Fd()) //nolint:gosec // fds are small
	require.NoError(t, probe.Close())
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low))

	ap := netip.MustParseAddrPort(addr)
	require.NoError(t, syscall.Connect(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}))

	time.Sleep(300 * time.Millisecond) // several failed accepts and retries
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit))

	conn, err := net.FileConn(f)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })                 //nolint:errcheck
	conn.SetDeadline(time.Now().Add(30 * time.Second)) //nolint:errcheck // a guard against hangs

	greeting, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err, "the client in the backlog was never relayed")
	assert.Equal(t, "a\n", greeting)
}

// A VIP is an address of its holder, but another node may hold it a moment
// later: an upstream there must not share the local tier with the node's own
// API server.
func TestFloatingAddressIsNeverLocal(t *testing.T) {
	own := newUpstream(t, "own")

	vipLn, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)

	vip := nettest.Serve(t, vipLn, func(c net.Conn) { c.Close() }) //nolint:errcheck

	spec := testSpec(own.addr, vip.Addr())
	spec.Floating = []string{"127.0.0.2"}
	p, _ := startProxy(t, health.NetProber{}, spec)

	waitState(t, p, own.addr, health.StateHealthy)
	waitState(t, p, vip.Addr(), health.StateHealthy)

	for _, u := range p.Stats().Upstreams {
		assert.Equal(t, u.Address == own.addr, u.Preferred, "%s preferred", u.Address)
	}

	// Without the VIP marked floating both are local, and share the tier.
	spec = proto.CloneOf(spec)
	spec.Floating = nil
	require.NoError(t, p.Update(spec))

	for _, u := range p.Stats().Upstreams {
		assert.True(t, u.Preferred, "%s preferred", u.Address)
	}
}
