package agent_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
	cfg, err := os.ReadFile(e.cfg)
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(e.cfg, append(cfg, fmt.Sprintf(`proxies:
  - name: kubernetes
    listen: [%s]
    upstreams: [%s, %s]
    healthCheck: {kind: tcp, interval: 200ms}
`, listen, up1, up2)...), 0o600))

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
