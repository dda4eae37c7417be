package lbctl

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func newValidateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate <file>...",
		Short: "Check agent configs, or machine-config patches carrying one, before they reach a node",
		Long: `Check each file as the agent would read it, without a running agent.

A file is either an agent config (kind: AgentConfig) or a Talos machine-config
patch with the ExtensionServiceConfig named lb-agent (what 'lbctl gen config'
writes and extension/examples hold). For a patch the agent config mounted at
` + agentConfigPath + ` must parse, every certificate or password file it names
must be mounted too, and stateDir must be under ` + agentStateDir + `.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var errs []error

			for _, file := range args {
				data, err := os.ReadFile(file)
				if err != nil {
					errs = append(errs, err)

					continue
				}

				cfg, err := checkAgentDocument(data)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", file, err))

					continue
				}

				fmt.Fprintf(g.out, "%s: valid (%s agent)\n", file, cfg.Node.Role)
			}

			return errors.Join(errs...)
		},
	}
}
