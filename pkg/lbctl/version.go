package lbctl

import (
	"fmt"

	"github.com/spf13/cobra"

	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/client"
	"github.com/talos-lb/talos-lb/pkg/version"
)

func newVersionCmd(g *globals) *cobra.Command {
	var clientOnly bool

	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print lbctl's version and each agent's",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(g.out, "Client: %s\n", version.String())

			if clientOnly {
				return nil
			}

			return g.eachAgent(func(a *client.Agent) error {
				v, err := a.API.Version(cmd.Context(), &agentpb.VersionRequest{})
				if err != nil {
					return err
				}

				fmt.Fprintf(g.out, "Agent %s: node %s, %s %s, you are %s\n", a.Endpoint, v.GetNodeName(), version.Name, v.GetVersion(), v.GetCallerRole())

				return nil
			})
		},
	}

	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only lbctl's own version")

	return cmd
}

func newReloadCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make agents re-read their config file now (admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.eachAgent(func(a *client.Agent) error {
				resp, err := a.API.ReloadConfig(cmd.Context(), &agentpb.ReloadConfigRequest{})
				if err != nil {
					return err
				}

				if !resp.GetAccepted() {
					return fmt.Errorf("config rejected, generation %d keeps running: %s", resp.GetGeneration(), resp.GetError())
				}

				fmt.Fprintf(g.out, "%s: generation %d running\n", a.Endpoint, resp.GetGeneration())

				return nil
			})
		},
	}
}
