package lbctl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/talos-lb/talos-lb/pkg/config"
)

// Where the extension's service spec (extension/rootfs/usr/local/etc/containers/lb-agent.yaml)
// puts things; integration/talosext checks that the spec and these agree.
const (
	// extensionService is the service's name, and so the ExtensionServiceConfig's.
	extensionService = "lb-agent"
	// agentFilesDir holds the config and the certificates, each mounted
	// read-only from the ExtensionServiceConfig.
	agentFilesDir   = "/usr/local/etc/talos-lb"
	agentConfigPath = agentFilesDir + "/agent.yaml"
	// agentStateDir is the service's only writable mount.
	agentStateDir = "/var/lib/talos-lb"
)

// talosHeader is what every Talos multi-document config document starts with.
type talosHeader struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Name       string `yaml:"name,omitempty"`
}

// extensionServiceConfig is Talos's ExtensionServiceConfig document.
type extensionServiceConfig struct {
	talosHeader `yaml:",inline"`
	ConfigFiles []configFile `yaml:"configFiles"`
}

type configFile struct {
	Content   string `yaml:"content"`
	MountPath string `yaml:"mountPath"`
}

// networkRuleConfig is Talos's NetworkRuleConfig document: it opens ports
// when the host firewall's default action is block.
type networkRuleConfig struct {
	talosHeader  `yaml:",inline"`
	PortSelector portSelector  `yaml:"portSelector"`
	Ingress      []ingressRule `yaml:"ingress"`
}

type portSelector struct {
	Ports    []int  `yaml:"ports"`
	Protocol string `yaml:"protocol"`
}

type ingressRule struct {
	Subnet string `yaml:"subnet"`
}

// checkAgentDocument validates what the agent would run from one file: a
// bare agent config, or a machine-config patch carrying the lb-agent
// ExtensionServiceConfig. In a patch the agent config must parse, and every
// file it names must be mounted as well: an extension service sees nothing
// of the host but its mounts, so a forgotten certificate would only show up
// as a crash-looping service on the node.
func checkAgentDocument(data []byte) (*config.Config, error) {
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, err
	}

	if len(docs) == 1 && docs[0].header.Kind == config.Kind {
		return parseShared(data)
	}

	var found []*extensionServiceConfig

	for _, d := range docs {
		if d.header.Kind != "ExtensionServiceConfig" || d.header.Name != extensionService {
			continue
		}

		var esc extensionServiceConfig
		if err := d.node.Decode(&esc); err != nil {
			return nil, fmt.Errorf("line %d: ExtensionServiceConfig %s: %w", d.node.Line, extensionService, err)
		}

		found = append(found, &esc)
	}

	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no ExtensionServiceConfig named %s: neither an agent config nor a patch for it", extensionService)
	case 1:
		return checkServiceConfig(found[0])
	default:
		return nil, fmt.Errorf("%d ExtensionServiceConfig documents named %s: Talos takes one", len(found), extensionService)
	}
}

func checkServiceConfig(esc *extensionServiceConfig) (*config.Config, error) {
	mounted := map[string]bool{}

	var (
		agentYAML string
		errs      []error
	)

	for _, f := range esc.ConfigFiles {
		switch {
		case !path.IsAbs(f.MountPath):
			errs = append(errs, fmt.Errorf("configFiles: mountPath %q must be absolute", f.MountPath))
		case mounted[f.MountPath]:
			errs = append(errs, fmt.Errorf("configFiles: %s is mounted twice", f.MountPath))
		case f.Content == "":
			errs = append(errs, fmt.Errorf("configFiles: %s has no content", f.MountPath))
		}

		mounted[f.MountPath] = true

		if f.MountPath == agentConfigPath {
			agentYAML = f.Content
		}
	}

	if agentYAML == "" {
		return nil, errors.Join(append(errs, fmt.Errorf("configFiles: nothing mounted at %s, where ext-%s reads its config", agentConfigPath, extensionService))...)
	}

	cfg, err := parseShared([]byte(agentYAML))
	if err != nil {
		return nil, errors.Join(append(errs, fmt.Errorf("agent config (%s): %w", agentConfigPath, err))...)
	}

	for _, f := range cfg.Files() {
		if !mounted[f] {
			errs = append(errs, fmt.Errorf("agent config names %s, which no configFiles entry mounts: add it, the service sees no other host file", f))
		}
	}

	if cfg.StateDir != agentStateDir && !strings.HasPrefix(cfg.StateDir, agentStateDir+"/") {
		errs = append(errs, fmt.Errorf("agent config: stateDir %s is not under %s, the service's only writable mount", cfg.StateDir, agentStateDir))
	}

	return cfg, errors.Join(errs...)
}

// parseShared parses an agent config that may serve several nodes: one that
// leaves node.name to the hostname and names election peers is checked as
// each peer, since one of them is the node it runs on.
func parseShared(data []byte) (*config.Config, error) {
	var peek struct {
		VIP *struct {
			Election struct {
				Peers []config.Peer `yaml:"peers"`
			} `yaml:"election"`
		} `yaml:"vip"`
	}

	// A file this cannot read is config.Parse's to explain.
	if yaml.Unmarshal(data, &peek) != nil || peek.VIP == nil || len(peek.VIP.Election.Peers) == 0 {
		return config.Parse(data)
	}

	var cfg *config.Config

	for _, p := range peek.VIP.Election.Peers {
		var err error
		if cfg, err = config.ParseAs(data, p.Name); err != nil {
			return nil, fmt.Errorf("as node %q: %w", p.Name, err)
		}
	}

	return cfg, nil
}

type document struct {
	header talosHeader
	node   *yaml.Node
}

// splitDocuments reads every YAML document of a file with its header.
func splitDocuments(data []byte) ([]document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))

	var docs []document

	for {
		var n yaml.Node

		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}

		if err != nil {
			return nil, fmt.Errorf("parsing YAML: %w", err)
		}

		var h talosHeader
		if err := n.Decode(&h); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}

		docs = append(docs, document{header: h, node: &n})
	}
}

// marshalDocuments writes Talos config documents as one multi-document file.
func marshalDocuments(docs ...any) ([]byte, error) {
	var buf bytes.Buffer

	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)

	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return nil, fmt.Errorf("encoding %T: %w", d, err)
		}
	}

	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding documents: %w", err)
	}

	return buf.Bytes(), nil
}
