// Package client connects to talos-lb agents (and later the controller) over
// mutual TLS, using a client config file shaped like talosconfig: named
// contexts with endpoints and base64 PEM credentials.
package client

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// EnvConfig names the environment variable that points at the client config.
const EnvConfig = "LBCONFIG"

// DefaultAgentPort is where agents listen unless the config says otherwise.
const DefaultAgentPort = "50070"

// DefaultControllerPort is where lb-controller serves lbctl unless told otherwise
// (50071 is the agents' election port; a host-network controller must not clash).
const DefaultControllerPort = "50072"

// Config is an lbctl client config file.
type Config struct {
	Context  string              `yaml:"context"`
	Contexts map[string]*Context `yaml:"contexts"`
}

// Context is one cluster's endpoints and credentials.
type Context struct {
	// Endpoints are agent addresses (host or host:port) used when no --nodes are given.
	Endpoints []string `yaml:"endpoints"`
	// Controller is lb-controller's address (host or host:port), used by --controller.
	Controller string `yaml:"controller,omitempty"`
	CA         string `yaml:"ca"`
	Crt        string `yaml:"crt"`
	Key        string `yaml:"key"`
}

// DefaultConfigPath is $LBCONFIG, else ~/.talos-lb/config.
func DefaultConfigPath() string {
	if p := os.Getenv(EnvConfig); p != "" {
		return p
	}

	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".talos-lb", "config")
	}

	return filepath.Join(home, ".talos-lb", "config")
}

// LoadConfig reads a client config file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("client config %s does not exist, create one with `lbctl gen lbconfig` or pass --lbconfig: %w", path, fs.ErrNotExist)
		}

		return nil, fmt.Errorf("reading client config: %w", err)
	}

	var cfg Config

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)

	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("parsing client config %s: %w", path, err)
	}

	return &cfg, nil
}

// Save writes the config readable by its owner only: it holds a private key.
func (c *Config) Save(path string) error {
	data, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding client config: %w", err)
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating directory for %s: %w", path, err)
	}

	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing client config: %w", err)
	}

	return nil
}

// Current returns the selected context, or the named one.
func (c *Config) Current(name string) (*Context, error) {
	if name == "" {
		name = c.Context
	}

	ctx, ok := c.Contexts[name]
	if !ok {
		return nil, fmt.Errorf("context %q not found in client config", name)
	}

	return ctx, nil
}

// NewContext encodes PEM credentials into a context.
func NewContext(endpoints []string, caPEM, certPEM, keyPEM []byte) *Context {
	enc := base64.StdEncoding.EncodeToString

	return &Context{Endpoints: endpoints, CA: enc(caPEM), Crt: enc(certPEM), Key: enc(keyPEM)}
}

// PEM decodes the context's credentials.
func (c *Context) PEM() (caPEM, certPEM, keyPEM []byte, err error) {
	dec := func(field, s string) []byte {
		if err != nil {
			return nil
		}

		var b []byte

		b, err = base64.StdEncoding.DecodeString(s)
		if err != nil {
			err = fmt.Errorf("client config: %s is not valid base64: %w", field, err)
		} else if len(b) == 0 {
			err = fmt.Errorf("client config: %s is empty", field)
		}

		return b
	}

	caPEM, certPEM, keyPEM = dec("ca", c.CA), dec("crt", c.Crt), dec("key", c.Key)

	return caPEM, certPEM, keyPEM, err
}
