//go:build k8s

package k8s_test

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

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

	"github.com/talos-lb/talos-lb/controller/crd"
	"github.com/talos-lb/talos-lb/controller/reconcile"
	"github.com/talos-lb/talos-lb/integration/binaries"
	"github.com/talos-lb/talos-lb/integration/k8s/kapi"
)

// proc is a process a test started; it is killed (by PID) when the test ends.
type proc struct {
	cmd *exec.Cmd
	log *bytes.Buffer
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()

	bin, err := binaries.Path(name)
	if err != nil {
		t.Fatal(err)
	}

	p := &proc{cmd: exec.Command(bin, args...), log: &bytes.Buffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log

	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill() //nolint:errcheck
			p.cmd.Wait()         //nolint:errcheck
		}

		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.log)
		}
	})

	return p
}

func (p *proc) term(t *testing.T) {
	t.Helper()

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()

	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not stop on SIGTERM", p.cmd.Path)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() //nolint:errcheck

	return ln.Addr().String()
}

type lbctl struct {
	t   *testing.T
	cfg string
}

func (l lbctl) try(args ...string) (string, error) {
	bin, err := binaries.Path("lbctl")
	if err != nil {
		return "", err
	}

	out, err := exec.Command(bin, append([]string{"--lbconfig", l.cfg}, args...)...).CombinedOutput()

	return string(out), err
}

func (l lbctl) run(args ...string) string {
	l.t.Helper()

	out, err := l.try(args...)
	if err != nil {
		l.t.Fatalf("lbctl %v: %v\n%s", args, err, out)
	}

	return out
}

// specs decodes `lbctl get -o json` output: one JSON document per resource.
func specs(t *testing.T, out string) map[string]map[string]any {
	t.Helper()

	res := map[string]map[string]any{}
	dec := json.NewDecoder(strings.NewReader(out))

	for dec.More() {
		var doc struct {
			Metadata map[string]any `json:"metadata"`
			Spec     map[string]any `json:"spec"`
		}

		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("decoding %q: %v", out, err)
		}

		res[fmt.Sprint(doc.Metadata["id"])] = doc.Spec
	}

	return res
}

func agentYAML(dir, node, api, metrics string) string {
	return fmt.Sprintf(`apiVersion: talos-lb.dev/v1alpha1
kind: AgentConfig
node:
  name: %s
  role: worker
api:
  listen: %s
  tls:
    ca: %[3]s/secrets/ca.crt
    cert: %[3]s/secrets/agent.crt
    key: %[3]s/secrets/agent.key
metrics:
  listen: %[4]s
stateDir: %[3]s/state-%[1]s
`, node, api, dir, metrics)
}

// The whole product path with real processes: lb-controller against the
// apiserver pushes to two real lb-agent processes; lbctl reads both sides;
// agents keep their state when the controller stops and across a restart.
func TestEndToEndProcesses(t *testing.T) {
	c := kapi.Start(t)
	c.ApplyCRDs(t, "../../deploy/crds")

	dir := t.TempDir()
	ctlAddr := freeAddr(t)
	l := lbctl{t: t, cfg: filepath.Join(dir, "lbconfig")}
	l.run("gen", "secrets", "-o", filepath.Join(dir, "secrets"))

	nodes := []string{"node-a", "node-b"}
	apis := map[string]string{}
	agents := map[string]*proc{}

	startAgent := func(node string) {
		agents[node] = startProc(t, "lb-agent", "--config", filepath.Join(dir, node+".yaml"), "--log-format", "console")
	}

	for i, node := range nodes {
		apis[node] = freeAddr(t)
		if err := os.WriteFile(filepath.Join(dir, node+".yaml"), []byte(agentYAML(dir, node, apis[node], freeAddr(t))), 0o600); err != nil {
			t.Fatal(err)
		}

		startAgent(node)
		c.CreateNode(t, node, nil, []string{fmt.Sprintf("192.0.2.%d", 21+i)}, true)
		(&env{t: t, c: c}).annotateNode(node, reconcile.AnnotationAgentEndpoint, apis[node])
	}

	l.run("gen", "lbconfig", "--secrets", filepath.Join(dir, "secrets"), "-e", apis["node-a"]+","+apis["node-b"], "--controller", ctlAddr)

	e := &env{t: t, c: c}
	e.create(crd.KindIPAddressPool, "default", "e2e", map[string]any{"addresses": []any{"203.0.113.0/29"}})
	e.create(crd.KindL2Advertisement, "default", "e2e", nil)

	startCtl := func() *proc {
		return startProc(t, "lb-controller",
			"--kubeconfig", c.Kubeconfig,
			"--ca", filepath.Join(dir, "secrets", "ca.crt"),
			"--cert", filepath.Join(dir, "secrets", "controller.crt"),
			"--key", filepath.Join(dir, "secrets", "controller.key"),
			"--listen", ctlAddr, "--metrics-listen", "",
			"--identity", "e2e", "--lease-namespace", "kube-system", "--log-format", "console")
	}

	ctl := startCtl()

	e.service("default", "web")
	e.waitIPs("default", "web", "203.0.113.0")

	// The controller's view, through lbctl --controller.
	eventually(t, 20*time.Second, func() (bool, string) {
		out, err := l.try("--controller", "get", "agents", "-o", "json")
		if err != nil {
			return false, out
		}

		pushes := specs(t, out)
		for _, n := range nodes {
			if pushes[n]["state"] != "synced" || pushes[n]["serviceIps"] != float64(1) {
				return false, fmt.Sprintf("agent pushes: %v", pushes)
			}
		}

		return true, ""
	})

	pools := specs(t, l.run("--controller", "get", "pools", "-o", "json"))
	if pools["e2e"]["ipv4Used"] != "1" || pools["e2e"]["ipv4Total"] != "8" {
		t.Fatalf("pool usage: %v", pools["e2e"])
	}

	svcs := specs(t, l.run("--controller", "get", "services", "-o", "json"))
	if fmt.Sprint(svcs["default/web"]["addresses"]) != "[203.0.113.0]" || len(svcs["default/web"]["ranking"].([]any)) != 2 {
		t.Fatalf("service view: %v", svcs["default/web"])
	}

	t.Log(l.run("--controller", "get", "services"))

	// Each agent holds the pushed IP.
	for _, n := range nodes {
		sips := specs(t, l.run("-n", apis[n], "get", "serviceips", "-o", "json"))
		if _, ok := sips["203.0.113.0"]; !ok {
			t.Fatalf("%s has no ServiceIP 203.0.113.0: %v", n, sips)
		}
	}

	// The API servers' endpoints (a documentation address: nothing dials it
	// here) reach every agent as APIEndpoints, for proxies with pushedUpstreams.
	c.CreateEndpointSlice(t, "default", "kubernetes", []kapi.Endpoint{{IP: "192.0.2.10", Ready: true}, {IP: "192.0.2.11"}},
		discoveryv1.EndpointPort{Name: ptr.To("https"), Port: ptr.To(int32(6443))})

	for _, n := range nodes {
		waitAPIEndpoints(t, l, apis[n], "[192.0.2.10:6443]")
	}

	// Controller gone: agents keep their state, also across a restart.
	ctl.term(t)
	agents["node-b"].term(t)
	startAgent("node-b")
	waitAPIEndpoints(t, l, apis["node-b"], "[192.0.2.10:6443]")

	eventually(t, 15*time.Second, func() (bool, string) {
		out, err := l.try("-n", apis["node-b"], "get", "serviceips", "-o", "json")
		if err != nil {
			return false, out
		}

		_, ok := specs(t, out)["203.0.113.0"]

		return ok, "restarted agent lost its pushed state: " + out
	})

	// A new controller rebuilds from status: same address, and pushes again.
	startCtl()
	e.service("default", "api")
	e.waitIPs("default", "api", "203.0.113.1")
	e.waitIPs("default", "web", "203.0.113.0")
}

// waitAPIEndpoints waits until the agent's APIEndpoints say want (as fmt prints a list).
func waitAPIEndpoints(t *testing.T, l lbctl, agent, want string) {
	t.Helper()

	eventually(t, 20*time.Second, func() (bool, string) {
		out, err := l.try("-n", agent, "get", "apiendpoints", "-o", "json")
		if err != nil {
			return false, out
		}

		got := fmt.Sprint(specs(t, out)["kubernetes"]["endpoints"])

		return got == want, fmt.Sprintf("%s: APIEndpoints %s, want %s", agent, got, want)
	})
}
