package agent_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// lbctl doctor reads a real agent's resources over gRPC and judges them.
func TestDoctorAgainstRealAgent(t *testing.T) {
	e := start(t)

	// A check still unknown would be reported.
	require.Eventually(t, func() bool {
		docs := decodeDocs(t, e.run("get", "health", "-o", "json"))

		return len(docs) == 1 && docs[0].Spec["state"] == "healthy"
	}, 10*time.Second, 100*time.Millisecond)

	out := e.run("doctor", "--talosconfig", "")
	require.Contains(t, out, "[ok] reachable: all 1 agents answer")
	require.Contains(t, out, "[ok] vip config: no control-plane VIP configured")
	require.NotContains(t, out, "PROBLEM")

	// An agent that does not answer is a problem, and doctor says what to do.
	out, err := e.try("doctor", "--talosconfig", "", "-n", e.apiURL+","+freePort(t))
	require.Error(t, err, out)
	require.Contains(t, out, "[PROBLEM] reachable")
	require.Contains(t, out, "talosctl -n <node> service ext-lb-agent")
}
