// Package lbctl is the lbctl command tree: reading agents' resources, taking
// admin actions, and generating secrets and configs. It talks to agents only
// through pkg/client; cmd/lbctl is a thin main around it.
package lbctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/talos-lb/talos-lb/pkg/client"
	"github.com/talos-lb/talos-lb/pkg/version"
)

type globals struct {
	configPath string
	context    string
	nodes      []string
	controller string
	out        io.Writer
}

// NewRoot builds the lbctl command.
func NewRoot() *cobra.Command {
	g := &globals{out: os.Stdout}

	root := &cobra.Command{
		Use:           "lbctl",
		Short:         "Inspect and operate talos-lb agents",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}

	root.SetVersionTemplate(version.String() + "\n")
	root.PersistentFlags().StringVar(&g.configPath, "lbconfig", client.DefaultConfigPath(), "client config file (env "+client.EnvConfig+")")
	root.PersistentFlags().StringVar(&g.context, "context", "", "context of the client config to use (default: its current context)")
	root.PersistentFlags().StringSliceVarP(&g.nodes, "nodes", "n", nil, "agents to talk to (host or host:port); default: the context's endpoints")

	root.PersistentFlags().StringVarP(&g.controller, "controller", "c", "", "talk to lb-controller instead of agents (host or host:port; bare --controller uses the context's controller)")
	root.PersistentFlags().Lookup("controller").NoOptDefVal = contextController

	root.AddCommand(newGetCmd(g), newVersionCmd(g), newReloadCmd(g), newGenCmd(g), newValidateCmd(g), newDoctorCmd(g))

	return root
}

// Execute runs lbctl and returns the process exit code.
func Execute(ctx context.Context, args []string) int {
	root := NewRoot()
	root.SetArgs(args)

	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "lbctl:", err)

		return 1
	}

	return 0
}

// contextController is the --controller value meaning "the context's controller".
const contextController = "(context)"

// agents dials every selected node, or the controller with --controller; the caller closes them.
func (g *globals) agents() ([]*client.Agent, error) {
	cfg, err := client.LoadConfig(g.configPath)
	if err != nil {
		return nil, err
	}

	cctx, err := cfg.Current(g.context)
	if err != nil {
		return nil, err
	}

	if g.controller != "" {
		endpoint := g.controller
		if endpoint == contextController {
			endpoint = cctx.Controller
		}

		if endpoint == "" {
			return nil, errors.New("no controller: pass --controller=host[:port] or set controller in the client config")
		}

		c, err := client.DialController(endpoint, cctx)
		if err != nil {
			return nil, err
		}

		return []*client.Agent{c}, nil
	}

	nodes := g.nodes
	if len(nodes) == 0 {
		nodes = cctx.Endpoints
	}

	if len(nodes) == 0 {
		return nil, errors.New("no nodes: pass --nodes or add endpoints to the client config")
	}

	out := make([]*client.Agent, 0, len(nodes))

	for _, n := range nodes {
		a, err := client.DialAgent(n, cctx)
		if err != nil {
			closeAll(out)

			return nil, err
		}

		out = append(out, a)
	}

	return out, nil
}

func closeAll(agents []*client.Agent) {
	for _, a := range agents {
		a.Close() //nolint:errcheck
	}
}

// explain adds what to do to the errors users meet most.
func explain(node string, err error) error {
	msg := err.Error()

	switch {
	case strings.Contains(msg, "connection refused"):
		return fmt.Errorf("node %s: %w (is lb-agent running there, and is api.listen reachable from here?)", node, err)
	case strings.Contains(msg, "certificate"), strings.Contains(msg, "tls:"):
		return fmt.Errorf("node %s: %w (the client config's CA and certificate must come from the same `lbctl gen secrets` as the agent's)", node, err)
	case strings.Contains(msg, "PermissionDenied"):
		return fmt.Errorf("node %s: %w (use a client config with a role that may do this, e.g. admin)", node, err)
	default:
		return fmt.Errorf("node %s: %w", node, err)
	}
}

// eachAgent dials the selected agents, runs fn on each, and joins the
// failures (explained) so one unreachable node does not hide the others.
func (g *globals) eachAgent(fn func(a *client.Agent) error) error {
	agents, err := g.agents()
	if err != nil {
		return err
	}
	defer closeAll(agents)

	var errs []error

	for _, a := range agents {
		if err := fn(a); err != nil {
			errs = append(errs, explain(a.Endpoint, err))
		}
	}

	return errors.Join(errs...)
}
