// Package cluster starts real lb-agent processes in the nodes of a netns lab,
// with freshly generated secrets, and runs the real lbctl from the lab's
// client namespace. The netns tests and `make demo` share it.
package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/talos-lb/talos-lb/integration/binaries"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/pkg/client"
	"github.com/talos-lb/talos-lb/pkg/pki"
)

// APIPort is where the lab's agents listen.
const APIPort = 50070

// Agent is one running agent.
type Agent struct {
	Host   *lab.Host
	Proc   *lab.Proc
	Config string
}

// Cluster is a set of agents in a lab.
type Cluster struct {
	Lab      *lab.Lab
	Agents   []*Agent
	Dir      string
	LBConfig string
	lbctl    string
	agentBin string
}

// NodeConfig renders one node's agent config; Extra is appended verbatim (more YAML sections).
type NodeConfig struct {
	Role  string
	Extra string
}

// Options say how to configure each node (index in lab.Nodes); nil means a control-plane node.
type Options struct {
	Node func(i int, h *lab.Host) NodeConfig
}

// Start generates secrets and a client config, starts an agent on every lab node
// (ctx bounds the agents' lives) and waits until each answers lbctl.
func Start(ctx context.Context, l *lab.Lab, opts Options) (*Cluster, error) {
	agentBin, err := binaries.Path("lb-agent")
	if err != nil {
		return nil, err
	}

	lbctl, err := binaries.Path("lbctl")
	if err != nil {
		return nil, err
	}

	c := &Cluster{Lab: l, Dir: filepath.Join(l.Dir, "cluster"), lbctl: lbctl, agentBin: agentBin}
	c.LBConfig = filepath.Join(c.Dir, "lbconfig")

	if err := c.writeSecrets(); err != nil {
		return nil, err
	}

	for i, h := range l.Nodes {
		nc := NodeConfig{Role: "controlplane"}
		if opts.Node != nil {
			nc = opts.Node(i, h)
		}

		cfgPath := filepath.Join(c.Dir, h.Name+".yaml")
		if err := os.WriteFile(cfgPath, []byte(c.agentConfig(h, nc)), 0o600); err != nil {
			return nil, fmt.Errorf("writing %s config: %w", h.Name, err)
		}

		a := &Agent{Host: h, Config: cfgPath}
		if err := c.startAgent(ctx, a); err != nil {
			return nil, err
		}

		c.Agents = append(c.Agents, a)
	}

	for _, a := range c.Agents {
		if err := c.waitReady(ctx, a); err != nil {
			return nil, err
		}
	}

	return c, nil
}

func (c *Cluster) writeSecrets() error {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return fmt.Errorf("creating cluster directory: %w", err)
	}

	ca, err := pki.NewCA("talos-lb lab", time.Hour*24)
	if err != nil {
		return err
	}

	files := map[string][]byte{"ca.crt": ca.CertPEM}

	for _, role := range []pki.Role{pki.RoleAgent, pki.RoleAdmin, pki.RoleController} {
		kp, err := ca.Issue(pki.IssueOptions{CommonName: "lab " + string(role), Role: role, Validity: 24 * time.Hour})
		if err != nil {
			return err
		}

		files[string(role)+".crt"], files[string(role)+".key"] = kp.CertPEM, kp.KeyPEM
	}

	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), data, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}

	endpoints := make([]string, 0, len(c.Lab.Nodes))
	for _, h := range c.Lab.Nodes {
		endpoints = append(endpoints, h.IPv4.String())
	}

	cfg := &client.Config{Context: "lab", Contexts: map[string]*client.Context{
		"lab": client.NewContext(endpoints, files["ca.crt"], files["admin.crt"], files["admin.key"]),
	}}

	return cfg.Save(c.LBConfig)
}

func (c *Cluster) agentConfig(h *lab.Host, nc NodeConfig) string {
	return fmt.Sprintf(`apiVersion: talos-lb.dev/v1alpha1
kind: AgentConfig
node:
  name: %s
  role: %s
api:
  listen: "[::]:%d"
  tls:
    ca: %[4]s/ca.crt
    cert: %[4]s/agent.crt
    key: %[4]s/agent.key
stateDir: %[4]s/state-%[1]s
%[5]s`, h.Name, nc.Role, APIPort, c.Dir, nc.Extra)
}

func (c *Cluster) waitReady(ctx context.Context, a *Agent) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()

	var lastErr error

	for ctx.Err() == nil {
		select {
		case <-a.Proc.Done():
			return fmt.Errorf("agent on %s exited:\n%s", a.Host.Name, a.Proc.Log())
		default:
		}

		if _, lastErr = c.Lbctl(ctx, "-n", a.Host.IPv4.String(), "version"); lastErr == nil {
			return nil
		}

		time.Sleep(50 * time.Millisecond)
	}

	return fmt.Errorf("agent on %s never answered: %w\n%s", a.Host.Name, lastErr, a.Proc.Log())
}

// Lbctl runs lbctl with the cluster's admin config from the client namespace.
func (c *Cluster) Lbctl(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{c.lbctl, "--lbconfig", c.LBConfig}, args...)
	out, err := c.Lab.Client.Run(ctx, argv...)

	if err != nil {
		return string(out), fmt.Errorf("lbctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}

	return string(out), nil
}

// Endpoint is an agent's API address for lbctl -n.
func Endpoint(a netip.Addr) string {
	return netip.AddrPortFrom(a, APIPort).String()
}

func (c *Cluster) startAgent(ctx context.Context, a *Agent) error {
	p, err := a.Host.Start(ctx, "lb-agent", []string{c.agentBin, "--config", a.Config, "--config-poll", "200ms"}, nil)
	if err != nil {
		return fmt.Errorf("starting agent on %s: %w", a.Host.Name, err)
	}

	a.Proc = p

	return nil
}

// Restart stops an agent the way Talos does (SIGTERM), starts it again with
// the same config and state directory, and waits until it answers.
func (c *Cluster) Restart(ctx context.Context, a *Agent) error {
	if err := a.Proc.Stop(); err != nil {
		return fmt.Errorf("stopping agent on %s: %w", a.Host.Name, err)
	}

	if err := c.startAgent(ctx, a); err != nil {
		return err
	}

	return c.waitReady(ctx, a)
}

// ControlPlanes configures every node as a control-plane node with the same extra config.
func ControlPlanes(extra string) Options {
	return Options{Node: func(int, *lab.Host) NodeConfig {
		return NodeConfig{Role: "controlplane", Extra: extra}
	}}
}
