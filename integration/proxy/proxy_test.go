// Package proxy_test runs a real agent's local proxy in the netns lab, in
// front of upstreams on other nodes, and black-holes one of them by cutting
// its cable: no reset, no refusal, just silence, as when a node hangs or
// its network dies.
package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/pkg/nettest"
)

const (
	upstreamPort = 6443
	proxyAddr    = "127.0.0.1:7446"
)

// serveGreeting answers every client with the host's name, then echoes.
func serveGreeting(t *testing.T, h *lab.Host) {
	t.Helper()

	ln, err := h.Listen(t.Context(), "tcp4", netip.AddrPortFrom(h.IPv4, upstreamPort).String())
	require.NoError(t, err)

	nettest.Serve(t, ln, func(c net.Conn) {
		defer c.Close() //nolint:errcheck

		if _, err := fmt.Fprintln(c, h.Name); err == nil {
			io.Copy(c, c) //nolint:errcheck // until the client leaves
		}
	})
}

type upstreamDoc struct {
	Spec struct {
		Address   string `json:"address"`
		State     string `json:"state"`
		LastError string `json:"lastError"`
	} `json:"spec"`
}

func upstreamStates(t *testing.T, c *cluster.Cluster, node *lab.Host) map[string]upstreamDoc {
	t.Helper()

	out, err := c.Lbctl(t.Context(), "-n", cluster.Endpoint(node.IPv4), "get", "upstreams", "-o", "json")
	require.NoError(t, err)

	docs := map[string]upstreamDoc{}

	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var d upstreamDoc
		require.NoError(t, dec.Decode(&d), out)

		docs[d.Spec.Address] = d
	}

	return docs
}

// through connects to the proxy from inside node and returns the upstream's greeting.
func through(ctx context.Context, node *lab.Host) (net.Conn, *bufio.Reader, string, error) {
	c, err := node.Dial(ctx, "tcp4", proxyAddr)
	if err != nil {
		return nil, nil, "", err
	}

	c.SetDeadline(time.Now().Add(30 * time.Second)) //nolint:errcheck // a guard against hangs, not a timing claim

	r := bufio.NewReader(c)

	name, err := r.ReadString('\n')
	if err != nil {
		c.Close() //nolint:errcheck

		return nil, nil, "", err
	}

	return c, r, strings.TrimSpace(name), nil
}

func TestBlackHoledUpstreamIsEjectedWithoutClientFailures(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{Nodes: 4, Client: true})
	proxyNode, upstreamNodes := l.Nodes[0], l.Nodes[1:]

	var addrs []string

	for _, h := range upstreamNodes {
		serveGreeting(t, h)
		addrs = append(addrs, netip.AddrPortFrom(h.IPv4, upstreamPort).String())
	}

	c, err := cluster.Start(t.Context(), l, cluster.Options{
		Node: func(i int, _ *lab.Host) cluster.NodeConfig {
			nc := cluster.NodeConfig{Role: "worker"}
			if i == 0 {
				nc.Extra = fmt.Sprintf("proxies:\n  - name: kubernetes\n    listen: [%s]\n    upstreams: [%s]\n", proxyAddr, strings.Join(addrs, ", "))
			}

			return nc
		},
	})
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		states := upstreamStates(t, c, proxyNode)
		for _, a := range addrs {
			if states[a].Spec.State != "healthy" {
				return false
			}
		}

		return true
	}, 30*time.Second, 100*time.Millisecond, "upstreams never all healthy")

	// A long-lived stream (a watch, say) on an upstream that stays up.
	var (
		stream  net.Conn
		streamR *bufio.Reader
	)

	for stream == nil {
		conn, r, name, err := through(t.Context(), proxyNode)
		require.NoError(t, err)

		if name == upstreamNodes[1].Name {
			stream, streamR = conn, r
		} else {
			conn.Close() //nolint:errcheck
		}
	}

	t.Cleanup(func() { stream.Close() }) //nolint:errcheck

	// Clients keep coming while the first upstream goes silent.
	ctx, stop := context.WithCancel(t.Context())

	var (
		wg       sync.WaitGroup
		failures atomic.Int64
		clients  atomic.Int64
		mu       sync.Mutex
		firstErr error
	)

	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				conn, _, _, err := through(ctx, proxyNode)
				if err == nil {
					conn.Close() //nolint:errcheck
					clients.Add(1)

					continue
				}

				if ctx.Err() == nil {
					failures.Add(1)
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		})
	}

	cut := time.Now()
	require.NoError(t, l.SetPortUp(upstreamNodes[0], false))

	var (
		ejected time.Duration
		why     string
	)

	require.Eventually(t, func() bool {
		d := upstreamStates(t, c, proxyNode)[addrs[0]]
		if d.Spec.State != "unhealthy" {
			return false
		}

		ejected, why = time.Since(cut), d.Spec.LastError

		return true
	}, 60*time.Second, 50*time.Millisecond, "the black-holed upstream was never ejected")

	// Reported, not asserted: timings belong to benchmarks, not pass/fail.
	// A "dial: " error means a proxied client's dial ejected it, else the probes did.
	t.Logf("black-holed upstream seen out of rotation through lbctl %s after the cut (%s)", ejected.Round(time.Millisecond), why)

	seenAt := clients.Load()
	require.Eventually(t, func() bool { return clients.Load() > seenAt+50 }, 60*time.Second, 10*time.Millisecond)

	stop()
	wg.Wait()

	mu.Lock()
	require.Zero(t, failures.Load(), "client-visible failures while healthy upstreams existed; first: %v", firstErr)
	mu.Unlock()

	// The other upstreams' stream never noticed.
	_, err = fmt.Fprintln(stream, "still watching")
	require.NoError(t, err)

	line, err := streamR.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "still watching\n", line)

	states := upstreamStates(t, c, proxyNode)
	require.Equal(t, "healthy", states[addrs[1]].Spec.State)
	require.Equal(t, "healthy", states[addrs[2]].Spec.State)
	t.Logf("last error of the black-holed upstream: %s", states[addrs[0]].Spec.LastError)
}
