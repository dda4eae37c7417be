package configwatch_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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

const base = `apiVersion: talos-lb.dev/v1alpha1
kind: AgentConfig
node:
  name: cp-1
  role: controlplane
api:
  listen: 127.0.0.1:50070
  tls:
    ca: /etc/lb/ca.crt
    cert: /etc/lb/agent.crt
    key: /etc/lb/agent.key
healthChecks:
  - name: apiserver
    kind: https
    address: 127.0.0.1:6443
    insecureSkipVerify: true
`

func TestBadConfigNeverReplacesGoodOne(t *testing.T) {
	ctx := t.Context()
	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(ctx, st))

	path := filepath.Join(t.TempDir(), "agent.yaml")
	require.NoError(t, os.WriteFile(path, []byte(base), 0o600))

	w := configwatch.New(path, st, prometheus.NewRegistry(), zaptest.NewLogger(t))
	_, err := w.Load(ctx)
	require.NoError(t, err)

	cfg, err := safe.StateGetByID[*resources.AgentConfig](ctx, st, resources.AgentConfigID)
	require.NoError(t, err)
	require.Equal(t, "cp-1", cfg.TypedSpec().Value.GetNodeName())
	require.Len(t, cfg.TypedSpec().Value.GetHealthChecks(), 1)

	goodSum := cfg.TypedSpec().Value.GetSha256()

	// A typo in a new file: rejected, the running config stays, the status says why.
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(base, "    kind: https", "    kind: https\n    intervall: 1s", 1)), 0o600))

	accepted, gen, err := w.Reload(ctx)
	require.False(t, accepted)
	require.Equal(t, uint64(1), gen)
	require.ErrorContains(t, err, "healthChecks[0].intervall")

	cfg, err = safe.StateGetByID[*resources.AgentConfig](ctx, st, resources.AgentConfigID)
	require.NoError(t, err)
	require.Equal(t, goodSum, cfg.TypedSpec().Value.GetSha256())

	status, err := safe.StateGetByID[*resources.ConfigStatus](ctx, st, resources.ConfigStatusID)
	require.NoError(t, err)
	require.Contains(t, status.TypedSpec().Value.GetLastError(), "line 15: healthChecks[0].intervall: unknown field")
	require.Equal(t, uint64(1), status.TypedSpec().Value.GetGeneration())

	// A good change is applied; a start-only setting is reported, not pretended.
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(base, "127.0.0.1:50070", "127.0.0.1:50071", 1)+"  - name: local\n    kind: tcp\n    address: 127.0.0.1:7445\n"), 0o600))

	accepted, gen, err = w.Reload(ctx)
	require.NoError(t, err)
	require.True(t, accepted)
	require.Equal(t, uint64(2), gen)

	cfg, err = safe.StateGetByID[*resources.AgentConfig](ctx, st, resources.AgentConfigID)
	require.NoError(t, err)
	require.Len(t, cfg.TypedSpec().Value.GetHealthChecks(), 2)
	require.Equal(t, "127.0.0.1:50070", cfg.TypedSpec().Value.GetApiListen())

	status, err = safe.StateGetByID[*resources.ConfigStatus](ctx, st, resources.ConfigStatusID)
	require.NoError(t, err)
	require.Empty(t, status.TypedSpec().Value.GetLastError())
	require.Equal(t, []string{"api"}, status.TypedSpec().Value.GetRestartRequired())

	// A vanished file is an error too, and still keeps the running config.
	require.NoError(t, os.Remove(path))

	accepted, _, err = w.Reload(ctx)
	require.False(t, accepted)
	require.ErrorContains(t, err, "reading config file")
}
