// Package agent_test runs the real lb-agent binary on loopback and drives it
// with the real lbctl binary, as an operator would.
package agent_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/integration/binaries"
)

type env struct {
	t      *testing.T
	dir    string
	lbctl  string
	cfg    string
	apiURL string
	agent  *exec.Cmd
	log    *bytes.Buffer
}

func freePort(t *testing.T) string {
	t.Helper()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	defer ln.Close() //nolint:errcheck

	return ln.Addr().String()
}

func agentConfig(dir, api, metrics, readyz string) string {
	return fmt.Sprintf(`apiVersion: talos-lb.dev/v1alpha1
kind: AgentConfig
node:
  name: node-a
  role: controlplane
api:
  listen: %s
  tls:
    ca: %[2]s/secrets/ca.crt
    cert: %[2]s/secrets/agent.crt
    key: %[2]s/secrets/agent.key
metrics:
  listen: %s
stateDir: %[2]s/state
healthChecks:
  - name: apiserver
    kind: tcp
    address: %s
    interval: 200ms
`, api, dir, metrics, readyz)
}

func start(t *testing.T) *env {
	t.Helper()

	agentBin, err := binaries.Path("lb-agent")
	require.NoError(t, err)

	lbctl, err := binaries.Path("lbctl")
	require.NoError(t, err)

	dir := t.TempDir()
	e := &env{t: t, dir: dir, lbctl: lbctl, cfg: filepath.Join(dir, "agent.yaml"), apiURL: freePort(t), log: &bytes.Buffer{}}

	// A listener standing in for the API server the health check probes.
	upstream, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { upstream.Close() }) //nolint:errcheck

	e.run("gen", "secrets", "-o", filepath.Join(dir, "secrets"))
	// The last one generated becomes the current context: admin.
	e.run("gen", "lbconfig", "--secrets", filepath.Join(dir, "secrets"), "-e", e.apiURL, "--role", "reader", "--name", "reader")
	e.run("gen", "lbconfig", "--secrets", filepath.Join(dir, "secrets"), "-e", e.apiURL)
	e.run("--context", "talos-lb", "version", "--client")

	require.NoError(t, os.WriteFile(e.cfg, []byte(agentConfig(dir, e.apiURL, freePort(t), upstream.Addr().String())), 0o600))

	e.agent = exec.Command(agentBin, "--config", e.cfg, "--config-poll", "100ms")
	e.agent.Stdout, e.agent.Stderr = e.log, e.log
	require.NoError(t, e.agent.Start())

	t.Cleanup(func() {
		if e.agent.ProcessState == nil {
			e.agent.Process.Kill() //nolint:errcheck
			e.agent.Wait()         //nolint:errcheck
		}

		if t.Failed() {
			t.Logf("agent log:\n%s", e.log)
		}
	})

	require.Eventually(t, func() bool {
		_, err := e.try("get", "health", "apiserver", "-o", "json")

		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "agent never answered")

	return e
}

func (e *env) try(args ...string) (string, error) {
	cmd := exec.Command(e.lbctl, append([]string{"--lbconfig", filepath.Join(e.dir, "lbconfig")}, args...)...)
	out, err := cmd.CombinedOutput()

	return string(out), err
}

func (e *env) run(args ...string) string {
	e.t.Helper()

	out, err := e.try(args...)
	require.NoError(e.t, err, "lbctl %v:\n%s", args, out)

	return out
}

type doc struct {
	Node     string         `json:"node"`
	Metadata map[string]any `json:"metadata"`
	Spec     map[string]any `json:"spec"`
}

func decodeDocs(t *testing.T, out string) []doc {
	t.Helper()

	var docs []doc

	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var d doc
		require.NoError(t, dec.Decode(&d), out)

		docs = append(docs, d)
	}

	return docs
}

func TestLbctlAgainstRealAgent(t *testing.T) {
	e := start(t)

	rd := e.run("get", "rd")
	for _, typ := range []string{"agentconfigs.config.talos-lb.dev", "configstatuses.config.talos-lb.dev", "nodestatuses.agent.talos-lb.dev", "endpointhealths.agent.talos-lb.dev"} {
		require.Contains(t, rd, typ)
	}

	require.Eventually(t, func() bool {
		docs := decodeDocs(t, e.run("get", "health", "-o", "json"))

		return len(docs) == 1 && docs[0].Spec["state"] == "healthy"
	}, 10*time.Second, 100*time.Millisecond)

	nodes := decodeDocs(t, e.run("get", "nodes", "-o", "json"))
	require.Len(t, nodes, 1)
	require.Equal(t, "node-a", nodes[0].Metadata["id"])
	require.Equal(t, "controlplane", nodes[0].Spec["role"])

	table := e.run("get", "config")
	require.Contains(t, table, "NODE")
	require.Contains(t, table, "apiserver")

	yamlOut := e.run("get", "configstatus", "-o", "yaml")
	require.Contains(t, yamlOut, "generation: \"1\"")

	out, err := e.try("get", "nosuchtype")
	require.Error(t, err)
	require.Contains(t, out, `unknown resource type "nosuchtype"`)

	out, err = e.try("get", "health", "nosuchcheck")
	require.Error(t, err)
	require.Contains(t, out, `not found`)

	// A reader may read but not act.
	require.Contains(t, e.run("--context", "reader", "version"), "you are reader")
	out, err = e.try("--context", "reader", "reload")
	require.Error(t, err)
	require.Contains(t, out, "PermissionDenied")
	require.Contains(t, e.run("reload"), "generation 1 running")
}

func TestBadConfigKeepsAgentRunning(t *testing.T) {
	e := start(t)

	good, err := os.ReadFile(e.cfg)
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(e.cfg, []byte(strings.Replace(string(good), "interval: 200ms", "interval: 200ms\n    rise: eleven", 1)), 0o600))

	require.Eventually(t, func() bool {
		docs := decodeDocs(t, e.run("get", "configstatus", "-o", "json"))

		return len(docs) == 1 && strings.Contains(fmt.Sprint(docs[0].Spec["lastError"]), "healthChecks[0].rise")
	}, 10*time.Second, 100*time.Millisecond)

	// The running configuration and its health check are untouched.
	cfg := decodeDocs(t, e.run("get", "config", "-o", "json"))
	require.Len(t, cfg, 1)
	require.Len(t, cfg[0].Spec["healthChecks"], 1)

	out, err := e.try("reload")
	require.Error(t, err)
	require.Contains(t, out, "config rejected, generation 1 keeps running")

	// A fixed file is picked up and becomes generation 2.
	require.NoError(t, os.WriteFile(e.cfg, []byte(strings.Replace(string(good), "interval: 200ms", "interval: 300ms", 1)), 0o600))

	require.Eventually(t, func() bool {
		docs := decodeDocs(t, e.run("get", "configstatus", "-o", "json"))

		return len(docs) == 1 && docs[0].Spec["generation"] == "2" && docs[0].Spec["lastError"] == ""
	}, 10*time.Second, 100*time.Millisecond)
}

func TestSIGTERMStopsPromptly(t *testing.T) {
	e := start(t)

	// A watch holds a stream open: shutdown must not wait for it to end.
	watch := exec.Command(e.lbctl, "--lbconfig", filepath.Join(e.dir, "lbconfig"), "get", "health", "--watch")
	require.NoError(t, watch.Start())

	t.Cleanup(func() {
		watch.Process.Kill() //nolint:errcheck
		watch.Wait()         //nolint:errcheck
	})

	time.Sleep(300 * time.Millisecond)

	require.NoError(t, e.agent.Process.Signal(syscall.SIGTERM))

	done := make(chan error, 1)
	go func() { done <- e.agent.Wait() }()

	select {
	case err := <-done:
		require.NoError(t, err, "agent exit status")
	case <-time.After(8 * time.Second):
		t.Fatal("agent did not exit within 8 s of SIGTERM (Talos sends SIGKILL at 10 s)")
	}

	require.Contains(t, e.log.String(), "agent stopped")
}
