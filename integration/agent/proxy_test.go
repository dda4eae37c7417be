package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/controller/push"
	"github.com/talos-lb/talos-lb/integration/l2check"
	"github.com/talos-lb/talos-lb/pkg/nettest"
)

// greeter is an upstream that tells each client its name.
func greeter(t *testing.T, name string) string {
	t.Helper()

	return nettest.Listen(t, func(c net.Conn) {
		fmt.Fprintln(c, name) //nolint:errcheck
		c.Close()             //nolint:errcheck
	}).Addr()
}

func TestLbctlShowsTheProxyOfARealAgent(t *testing.T) {
	e := start(t)

	up1, up2 := greeter(t, "one"), greeter(t, "two")
	listen := freePort(t)

	// Proxies are applied on reload, without a restart.
	e.appendConfig(fmt.Sprintf(`proxies:
  - name: kubernetes
    listen: [%s]
    upstreams: [%s, %s]
    healthCheck: {kind: tcp, interval: 200ms}
`, listen, up1, up2))

	require.Eventually(t, func() bool {
		docs := decodeDocs(t, e.run("get", "proxies", "-o", "json"))

		return len(docs) == 1 && docs[0].Spec["state"] == "serving" && docs[0].Spec["healthyUpstreams"] == float64(2)
	}, 30*time.Second, 100*time.Millisecond)

	seen := map[string]bool{}

	for range 4 {
		c, err := net.Dial("tcp", listen)
		require.NoError(t, err)

		name, err := bufio.NewReader(c).ReadString('\n')
		require.NoError(t, err)
		c.Close() //nolint:errcheck

		seen[strings.TrimSpace(name)] = true
	}

	require.Equal(t, map[string]bool{"one": true, "two": true}, seen)

	require.Eventually(t, func() bool {
		docs := decodeDocs(t, e.run("get", "proxies", "kubernetes", "-o", "json"))

		return len(docs) == 1 && docs[0].Spec["total"] == "4"
	}, 30*time.Second, 100*time.Millisecond)

	table := e.run("get", "proxies")
	for _, col := range []string{"LISTEN", "STATE", "HEALTHY", "ACTIVE", "TOTAL", "FAILED DIALS", "RETRIES", listen, "serving"} {
		require.Contains(t, table, col)
	}

	upstreams := e.run("get", "upstreams")
	for _, col := range []string{"STATE", "LATENCY US", "LAST ERROR", "kubernetes/" + up1, "kubernetes/" + up2, "healthy"} {
		require.Contains(t, upstreams, col)
	}

	require.Contains(t, e.run("get", "proxyconfigs"), up1)

	t.Logf("lbctl get proxies:\n%s\nlbctl get upstreams:\n%s", table, upstreams)
}

// A real push from the controller role (gRPC, mutual TLS) names an API
// server the configuration does not: the agent's proxy takes it as an
// upstream beside the configured one, serves clients through it, and drops
// it when the next push does.
func TestPushedAPIEndpointsJoinTheProxy(t *testing.T) {
	e := start(t)

	refused, pushedUp := freePort(t), greeter(t, "pushed")
	listen := freePort(t)

	e.appendConfig(fmt.Sprintf(`proxies:
  - name: kubernetes
    listen: [%s]
    upstreams: [%s]
    pushedUpstreams: true
    healthCheck: {kind: tcp, interval: 200ms, rise: 1, fall: 1}
`, listen, refused))

	require.Eventually(t, func() bool {
		docs := decodeDocs(t, e.run("get", "proxies", "-o", "json"))

		return len(docs) == 1 && docs[0].Spec["state"] == "no-healthy-upstream"
	}, 30*time.Second, 100*time.Millisecond, "the configured upstream refuses: nothing should serve yet")

	e.push(&resourcepb.NodeDesiredState{ApiEndpoints: []string{pushedUp}})

	require.Eventually(t, func() bool {
		for _, d := range decodeDocs(t, e.run("get", "upstreams", "-o", "json")) {
			if d.Spec["address"] == pushedUp {
				return d.Spec["pushed"] == true && d.Spec["state"] == "healthy"
			}
		}

		return false
	}, 30*time.Second, 100*time.Millisecond, "the pushed API server never became a healthy upstream")

	c, err := net.Dial("tcp", listen)
	require.NoError(t, err)

	name, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	c.Close() //nolint:errcheck
	require.Equal(t, "pushed\n", name)

	// The next push names none: the proxy is back to its configuration.
	e.push(&resourcepb.NodeDesiredState{})

	require.Eventually(t, func() bool {
		docs := decodeDocs(t, e.run("get", "proxies", "-o", "json"))

		return len(docs) == 1 && docs[0].Spec["upstreams"] == float64(1) && docs[0].Spec["state"] == "no-healthy-upstream"
	}, 30*time.Second, 100*time.Millisecond)
}

// appendConfig adds yaml to the agent's configuration file, which the agent
// reloads without a restart.
func (e *env) appendConfig(yaml string) {
	e.t.Helper()

	cfg, err := os.ReadFile(e.cfg)
	require.NoError(e.t, err)
	require.NoError(e.t, os.WriteFile(e.cfg, append(cfg, yaml...), 0o600))
}

// push sends state to the agent as lb-controller would and waits until the
// agent runs it.
func (e *env) push(state *resourcepb.NodeDesiredState) {
	e.t.Helper()

	tlsConfig, err := l2check.ControllerTLS(filepath.Join(e.dir, "secrets"))
	require.NoError(e.t, err)

	sender := push.NewGRPCSender(tlsConfig)
	defer sender.Close() //nolint:errcheck

	p := push.New(sender, nil, push.Options{Identity: "test", Timeout: 5 * time.Second, BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second})
	p.Set(map[string]push.Target{"node-a": {Address: e.apiURL, State: state}})

	ctx, stop := context.WithCancel(e.t.Context())
	done := make(chan struct{})

	go func() {
		defer close(done)
		p.Run(ctx) //nolint:errcheck // it only fails when run twice
	}()

	defer func() {
		stop()
		<-done
	}()

	require.Eventually(e.t, func() bool {
		return p.Status()["node-a"].State == push.StateSynced
	}, 30*time.Second, 50*time.Millisecond, "the agent never ran the push: %+v", p.Status())
}
