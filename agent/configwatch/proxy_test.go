package configwatch_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/talos-lb/talos-lb/agent/configwatch"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

func TestProxiesFollowTheFile(t *testing.T) {
	ctx := t.Context()
	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(ctx, st))

	path := filepath.Join(t.TempDir(), "agent.yaml")
	two := base + `vip:
  addresses: [10.0.0.100]
  link: eth0
  healthCheck: apiserver
  election:
    peers: [{name: cp-1, address: "10.0.0.1:50071"}]
proxies:
  - name: kubernetes
    upstreams: [10.0.0.1:6443, 10.0.0.2:6443]
    pushedUpstreams: true
    healthCheck: {kind: https, caFile: /etc/k8s-ca.crt}
  - name: other
    listen: ["[::1]:9000"]
    upstreams: [10.0.0.1:9000]
`
	require.NoError(t, os.WriteFile(path, []byte(two), 0o600))

	w := configwatch.New(path, st, prometheus.NewRegistry(), zaptest.NewLogger(t))
	_, err := w.Load(ctx)
	require.NoError(t, err)

	list, err := safe.StateListAll[*resources.ProxyConfig](ctx, st)
	require.NoError(t, err)
	require.Equal(t, 2, list.Len())

	k, err := safe.StateGetByID[*resources.ProxyConfig](ctx, st, "kubernetes")
	require.NoError(t, err)

	spec := k.TypedSpec().Value
	require.Equal(t, []string{"127.0.0.1:7446"}, spec.GetListen())
	require.Equal(t, []string{"10.0.0.1:6443", "10.0.0.2:6443"}, spec.GetUpstreams())
	require.Equal(t, "https", spec.GetHealthCheck().GetKind())
	require.Equal(t, "/readyz", spec.GetHealthCheck().GetPath())
	require.Equal(t, "/etc/k8s-ca.crt", spec.GetHealthCheck().GetCaFile())
	require.Equal(t, 500*time.Millisecond, spec.GetHealthCheck().GetTimeout().AsDuration())
	require.Equal(t, "round-robin", spec.GetBalance())
	require.Equal(t, 5*time.Second, spec.GetConnectTimeout().AsDuration())
	require.True(t, spec.GetPushedUpstreams())
	require.Equal(t, []string{"10.0.0.100"}, spec.GetFloating(), "the VIP must not count as this node's API server")

	// A proxy dropped from the file disappears; the other one stays.
	require.NoError(t, os.WriteFile(path, []byte(base+`proxies:
  - name: other
    listen: ["[::1]:9000"]
    upstreams: [10.0.0.3:9000]
`), 0o600))

	accepted, _, err := w.Reload(ctx)
	require.NoError(t, err)
	require.True(t, accepted)

	list, err = safe.StateListAll[*resources.ProxyConfig](ctx, st)
	require.NoError(t, err)
	require.Equal(t, 1, list.Len())
	require.Equal(t, []string{"10.0.0.3:9000"}, list.Get(0).TypedSpec().Value.GetUpstreams())
}
