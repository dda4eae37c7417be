package lb_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/talos-lb/talos-lb/agent/health"
	"github.com/talos-lb/talos-lb/agent/proxy/lb"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/nettest"
)

// upstream is a real TCP server that greets every client with its name and
// then echoes, so a client knows where the proxy sent it.
type upstream struct {
	*nettest.Server

	name string
	addr string
}

func newUpstream(t *testing.T, name string) *upstream {
	t.Helper()

	srv := nettest.Listen(t, func(c net.Conn) {
		if _, err := io.WriteString(c, name+"\n"); err == nil {
			io.Copy(c, c) //nolint:errcheck // ends with the connection
		}

		c.Close() //nolint:errcheck
	})

	return &upstream{Server: srv, name: name, addr: srv.Addr()}
}

// kill is a crash: the port refuses, established connections get a reset.
func (u *upstream) kill() { u.Kill() }

func testSpec(upstreams ...string) *resourcepb.ProxyConfigSpec {
	return &resourcepb.ProxyConfigSpec{
		Name:      "test",
		Listen:    []string{"127.0.0.1:0"},
		Upstreams: upstreams,
		HealthCheck: &resourcepb.HealthCheckSpec{
			Kind: "tcp", Interval: durationpb.New(20 * time.Millisecond), Timeout: durationpb.New(200 * time.Millisecond),
			Rise: 2, Fall: 2,
		},
		Balance:        "round-robin",
		ConnectTimeout: durationpb.New(5 * time.Second),
		DialTimeout:    durationpb.New(time.Second),
		Keepalive:      durationpb.New(10 * time.Second),
		UserTimeout:    durationpb.New(30 * time.Second),
	}
}

func startProxy(t *testing.T, prober health.Prober, spec *resourcepb.ProxyConfigSpec) (*lb.Proxy, string) {
	t.Helper()

	p := lb.New(prober, func() {}, zaptest.NewLogger(t))
	require.NoError(t, p.Update(spec))
	t.Cleanup(p.Close)

	listen := p.Stats().Listen
	require.Len(t, listen, 1)

	return p, listen[0]
}

// client is one connection through the proxy and the upstream it reached.
type client struct {
	conn     net.Conn
	r        *bufio.Reader
	upstream string
}

// connect opens a client and waits for the upstream's greeting.
func connect(addr string) (*client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a guard against hangs, not a timing claim
	defer cancel()

	var d net.Dialer

	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}

	c.SetDeadline(time.Now().Add(30 * time.Second)) //nolint:errcheck // same guard

	cl := &client{conn: c, r: bufio.NewReader(c)}

	name, err := cl.r.ReadString('\n')
	if err != nil {
		c.Close() //nolint:errcheck

		return nil, err
	}

	cl.upstream = strings.TrimSpace(name)

	return cl, nil
}

// echo checks that the connection still carries data both ways.
func (c *client) echo(msg string) error {
	if _, err := io.WriteString(c.conn, msg+"\n"); err != nil {
		return err
	}

	got, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}

	if got != msg+"\n" {
		return errors.New("echo mismatch: " + got)
	}

	return nil
}

func (c *client) Close() { c.conn.Close() } //nolint:errcheck

// spread connects n times, one after another, and counts clients per upstream.
func spread(t *testing.T, addr string, n int) map[string]int {
	t.Helper()

	seen := map[string]int{}

	for range n {
		c, err := connect(addr)
		require.NoError(t, err)

		seen[c.upstream]++

		c.Close()
	}

	return seen
}

func waitState(t *testing.T, p *lb.Proxy, addr, state string) lb.UpstreamStats {
	t.Helper()

	var last lb.UpstreamStats

	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, u := range p.Stats().Upstreams {
			if u.Address == addr {
				last = u
			}
		}

		if last.State == state {
			return last
		}
	}

	t.Fatalf("upstream %s never became %s (last: %+v)", addr, state, last)

	return last
}
