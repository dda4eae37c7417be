package lbctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/talos-lb/talos-lb/pkg/client"
	"github.com/talos-lb/talos-lb/pkg/pki"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	certValidity = 365 * 24 * time.Hour
)

func newGenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "gen", Short: "Generate secrets and configs"}
	cmd.AddCommand(newGenSecretsCmd(g), newGenLBConfigCmd(g), newGenConfigCmd(g))

	return cmd
}

// SecretFiles are the file names `gen secrets` writes, per role.
func secretFiles(role string) (cert, key string) {
	return role + ".crt", role + ".key"
}

func newGenSecretsCmd(g *globals) *cobra.Command {
	var (
		dir       string
		force     bool
		agentSANs []string
	)

	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Generate the cluster CA and certificates for agent, controller, admin and reader",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if !force {
				if _, err := os.Stat(filepath.Join(dir, "ca.crt")); err == nil {
					return fmt.Errorf("%s already holds secrets; pass --force to replace them (every agent and client must then get the new ones)", dir)
				}
			}

			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("creating %s: %w", dir, err)
			}

			ca, err := pki.NewCA("talos-lb", caValidity)
			if err != nil {
				return err
			}

			if err := writePair(dir, "ca", ca); err != nil {
				return err
			}

			for _, role := range []pki.Role{pki.RoleAgent, pki.RoleController, pki.RoleAdmin, pki.RoleReader} {
				opts := pki.IssueOptions{CommonName: "talos-lb " + string(role), Role: role, Validity: certValidity}
				if role == pki.RoleAgent {
					opts.DNSNames = agentSANs
				}

				kp, err := ca.Issue(opts)
				if err != nil {
					return err
				}

				if err := writePair(dir, string(role), kp); err != nil {
					return err
				}
			}

			fmt.Fprintf(g.out, "wrote CA and agent, controller, admin, reader certificates to %s\n", dir)

			return nil
		},
	}

	cmd.Flags().StringVarP(&dir, "output-dir", "o", "_out/secrets", "directory to write the secrets to")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing secrets")
	cmd.Flags().StringSliceVar(&agentSANs, "agent-san", nil, "extra DNS names for the agents' certificate")

	return cmd
}

func writePair(dir, name string, kp *pki.KeyPair) error {
	certFile, keyFile := secretFiles(name)

	if err := os.WriteFile(filepath.Join(dir, certFile), kp.CertPEM, 0o644); err != nil { //nolint:gosec // certificates are public
		return fmt.Errorf("writing %s: %w", certFile, err)
	}

	if err := os.WriteFile(filepath.Join(dir, keyFile), kp.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", keyFile, err)
	}

	return nil
}

func newGenLBConfigCmd(g *globals) *cobra.Command {
	var (
		secrets    string
		role       string
		endpoints  []string
		controller string
		name       string
		output     string
	)

	cmd := &cobra.Command{
		Use:   "lbconfig",
		Short: "Write a client config for lbctl from the secrets, merged into an existing one",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			r, err := pki.ParseRole(role)
			if err != nil {
				return fmt.Errorf("--role: %w", err)
			}

			if r == pki.RoleAgent {
				return errors.New("--role: agent certificates are for agents, not for lbctl; use admin or reader")
			}

			read := func(file string) ([]byte, error) {
				b, err := os.ReadFile(filepath.Join(secrets, file))
				if err != nil {
					return nil, fmt.Errorf("reading secrets (run `lbctl gen secrets` first?): %w", err)
				}

				return b, nil
			}

			certFile, keyFile := secretFiles(role)

			var pems [3][]byte

			for i, f := range []string{"ca.crt", certFile, keyFile} {
				if pems[i], err = read(f); err != nil {
					return err
				}
			}

			if output == "" {
				output = g.configPath
			}

			cfg, err := client.LoadConfig(output)
			if errors.Is(err, fs.ErrNotExist) {
				cfg, err = &client.Config{}, nil
			}

			if err != nil {
				return err
			}

			if cfg.Contexts == nil {
				cfg.Contexts = map[string]*client.Context{}
			}

			cfg.Contexts[name] = client.NewContext(endpoints, pems[0], pems[1], pems[2])
			cfg.Contexts[name].Controller = controller
			cfg.Context = name

			if err := cfg.Save(output); err != nil {
				return err
			}

			fmt.Fprintf(g.out, "wrote context %q (%s) to %s\n", name, role, output)

			return nil
		},
	}

	cmd.Flags().StringVar(&secrets, "secrets", "_out/secrets", "directory written by `lbctl gen secrets`")
	cmd.Flags().StringVar(&role, "role", "admin", "role of the certificate to use: admin or reader (controller for tests)")
	cmd.Flags().StringSliceVarP(&endpoints, "endpoints", "e", nil, "agent addresses (host or host:port)")
	cmd.Flags().StringVar(&name, "name", "talos-lb", "context name")
	cmd.Flags().StringVar(&controller, "controller", "", "lb-controller's address (host or host:port), for lbctl --controller")
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write (default: --lbconfig)")

	return cmd
}
