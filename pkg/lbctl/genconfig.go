package lbctl

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/talos-lb/talos-lb/pkg/client"
	"github.com/talos-lb/talos-lb/pkg/config"
)

// Ports the agents listen on by default, opened by the firewall rules.
const (
	agentAPIPort = 50070
	electionPort = 50071
)

type genConfigOptions struct {
	secrets         string
	outDir          string
	controlPlane    []string
	vips            []string
	link            string
	firewallSubnets []string
	force           bool
}

// controlPlaneNode is one --control-plane entry.
type controlPlaneNode struct {
	Name string
	IP   netip.Addr
}

func newGenConfigCmd(g *globals) *cobra.Command {
	var o genConfigOptions

	cmd := &cobra.Command{
		Use:   "config",
		Short: "Write Talos machine-config patches (agent config and certificates) and an lbctl config from the secrets",
		Long: `Write, from the secrets of 'lbctl gen secrets':

  controlplane.yaml  patch for control-plane nodes: the ExtensionServiceConfig
                     of ext-lb-agent (agent config with the VIP, CA, agent
                     certificate and key) and, with --firewall-subnets, the
                     NetworkRuleConfig documents for the agent ports
  worker.yaml        the same for workers, without the VIP
  lbconfig           an lbctl client config (admin) for the control-plane nodes

Agents take node.name from the hostname: the --control-plane names must be the
nodes' hostnames. The controller's Kubernetes manifests come with the controller.`,
		Example: `  lbctl gen config --control-plane cp-1=10.5.0.2,cp-2=10.5.0.3,cp-3=10.5.0.4 \
    --vip 10.5.0.100 --link eth0 --firewall-subnets 10.5.0.0/24`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			return genConfig(g, &o)
		},
	}

	f := cmd.Flags()
	f.StringVar(&o.secrets, "secrets", "_out/secrets", "directory written by `lbctl gen secrets`")
	f.StringVarP(&o.outDir, "output-dir", "o", "_out/talos-lb", "directory to write controlplane.yaml, worker.yaml and lbconfig to")
	f.StringSliceVar(&o.controlPlane, "control-plane", nil, "every control-plane node as hostname=IP (required)")
	f.StringSliceVar(&o.vips, "vip", nil, "control-plane VIP addresses (IPv4 and/or IPv6); none: no VIP")
	f.StringVar(&o.link, "link", "", "interface carrying the VIP on every control-plane node, e.g. eth0")
	f.StringSliceVar(&o.firewallSubnets, "firewall-subnets", nil, "subnets allowed to reach the agent API (lbctl, controller); writes NetworkRuleConfig documents for a host firewall that blocks by default")
	f.BoolVar(&o.force, "force", false, "replace existing files")

	return cmd
}

// hostnameRE is what Talos accepts as a hostname; names go into YAML unquoted.
var hostnameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$`)

// linkRE is a Linux interface name; it goes into YAML unquoted.
var linkRE = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,15}$`)

func (o *genConfigOptions) parse() ([]controlPlaneNode, []netip.Addr, []netip.Prefix, error) {
	if len(o.controlPlane) == 0 {
		return nil, nil, nil, errors.New("--control-plane: required, every control-plane node as hostname=IP")
	}

	var (
		nodes []controlPlaneNode
		seen  = map[string]bool{}
	)

	for _, entry := range o.controlPlane {
		nodeName, ip, ok := strings.Cut(entry, "=")
		addr, err := netip.ParseAddr(ip)

		switch {
		case !ok || err != nil || addr.Zone() != "":
			return nil, nil, nil, fmt.Errorf("--control-plane %q: want hostname=IP", entry)
		case !hostnameRE.MatchString(nodeName):
			return nil, nil, nil, fmt.Errorf("--control-plane %q: %q is not a hostname (lower-case letters, digits, '-', '.')", entry, nodeName)
		case seen[nodeName] || seen[addr.String()]:
			return nil, nil, nil, fmt.Errorf("--control-plane %q: name or address given twice", entry)
		}

		seen[nodeName], seen[addr.String()] = true, true
		nodes = append(nodes, controlPlaneNode{Name: nodeName, IP: addr})
	}

	var vips []netip.Addr

	for _, v := range o.vips {
		addr, err := netip.ParseAddr(v)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--vip %q: not an IP address", v)
		}

		if seen[addr.String()] {
			return nil, nil, nil, fmt.Errorf("--vip %s is a node address: a VIP must be an unused address of the nodes' subnet", addr)
		}

		vips = append(vips, addr)
	}

	switch {
	case len(vips) > 0 && !linkRE.MatchString(o.link):
		return nil, nil, nil, fmt.Errorf("--link: required with --vip, an interface name such as eth0, got %q", o.link)
	case len(vips) == 0 && o.link != "":
		return nil, nil, nil, errors.New("--link without --vip: nothing to put on the link")
	}

	var subnets []netip.Prefix

	for _, s := range o.firewallSubnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--firewall-subnets %q: not a CIDR subnet", s)
		}

		subnets = append(subnets, p.Masked())
	}

	return nodes, vips, subnets, nil
}

func genConfig(g *globals, o *genConfigOptions) error {
	nodes, vips, subnets, err := o.parse()
	if err != nil {
		return err
	}

	pems, err := readSecrets(o.secrets, "ca.crt", "agent.crt", "agent.key", "admin.crt", "admin.key")
	if err != nil {
		return err
	}

	certs := []configFile{
		{MountPath: agentFilesDir + "/ca.crt", Content: string(pems[0])},
		{MountPath: agentFilesDir + "/agent.crt", Content: string(pems[1])},
		{MountPath: agentFilesDir + "/agent.key", Content: string(pems[2])},
	}

	cp, err := renderPatch(config.RoleControlPlane, nodes, vips, o.link, subnets, certs)
	if err != nil {
		return err
	}

	worker, err := renderPatch(config.RoleWorker, nil, nil, "", subnets, certs)
	if err != nil {
		return err
	}

	endpoints := make([]string, 0, len(nodes))
	for _, n := range nodes {
		endpoints = append(endpoints, n.IP.String())
	}

	lbconfig := &client.Config{Context: "talos-lb", Contexts: map[string]*client.Context{
		"talos-lb": client.NewContext(endpoints, pems[0], pems[3], pems[4]),
	}}

	if err := writeOutputs(o.outDir, o.force, cp, worker, lbconfig); err != nil {
		return err
	}

	printNextSteps(g, o.outDir, nodes, vips)

	return nil
}

func printNextSteps(g *globals, dir string, nodes []controlPlaneNode, vips []netip.Addr) {
	endpoint, hostnames := "https://<your endpoint>:6443", ""

	if len(vips) > 0 {
		names := make([]string, 0, len(nodes))
		for _, n := range nodes {
			names = append(names, n.Name)
		}

		endpoint = "https://" + net.JoinHostPort(vips[0].String(), "6443")
		hostnames = "The control-plane nodes' hostnames must be the election peers' names: " + strings.Join(names, ", ") + "\n"
	}

	fmt.Fprintf(g.out, `wrote %[1]s/controlplane.yaml, %[1]s/worker.yaml and %[1]s/lbconfig

New cluster:
  talosctl gen config <cluster-name> %[2]s \
    --config-patch-control-plane @%[1]s/controlplane.yaml --config-patch-worker @%[1]s/worker.yaml
Existing cluster (remove the native VIP first, see docs/migration.md):
  talosctl -n <control-plane nodes> patch mc --patch @%[1]s/controlplane.yaml
  talosctl -n <workers> patch mc --patch @%[1]s/worker.yaml
%[3]sThen: lbctl --lbconfig %[1]s/lbconfig doctor
The patches hold the agent's private key: keep them like a talosconfig.
`, dir, endpoint, hostnames)
}

// agentTemplate is the agent config gen config writes; every value in it is
// checked before (names, IPs, link) and the result parsed after, so it cannot
// produce a config the agent would refuse.
var agentTemplate = template.Must(template.New("agent").Parse(`# talos-lb agent config, written by lbctl gen config.
apiVersion: talos-lb.dev/v1alpha1
kind: AgentConfig
node:
  # node.name: the hostname{{if .Peers}}, which must be one of the peer names below{{end}}.
  role: {{.Role}}
api:
  tls:
    ca: {{.Dir}}/ca.crt
    cert: {{.Dir}}/agent.crt
    key: {{.Dir}}/agent.key
{{- if eq .Role "controlplane"}}
healthChecks:
  # The local API server. /readyz answers anonymous clients (Kubernetes's
  # default); the probe never leaves the node, so it skips verification.
  - name: apiserver
    kind: https
    address: 127.0.0.1:6443
    insecureSkipVerify: true
{{- end}}
# Liveness gossip among agents (UDP and TCP 7947 between nodes): LoadBalancer
# service IPs fail over between live nodes even while lb-controller is away.
members: {}
{{- if .VIPs}}
vip:
  addresses: [{{range $i, $v := .VIPs}}{{if $i}}, {{end}}"{{$v}}"{{end}}]
  link: {{.Link}}
  healthCheck: apiserver
  election:
    peers:
{{- range .Peers}}
      - {name: {{.Name}}, address: "{{.Address}}"}
{{- end}}
{{- end}}
`))

type templatePeer struct{ Name, Address string }

// renderPatch writes one role's patch and checks it the way `lbctl validate` does.
func renderPatch(role config.Role, nodes []controlPlaneNode, vips []netip.Addr, link string, subnets []netip.Prefix, certs []configFile) ([]byte, error) {
	var peers []templatePeer

	if len(vips) > 0 {
		for _, n := range nodes {
			peers = append(peers, templatePeer{Name: n.Name, Address: net.JoinHostPort(n.IP.String(), config.DefaultElectionPort)})
		}
	}

	var agent strings.Builder
	if err := agentTemplate.Execute(&agent, map[string]any{
		"Role": role, "Dir": agentFilesDir, "VIPs": vips, "Link": link, "Peers": peers,
	}); err != nil {
		return nil, fmt.Errorf("rendering the %s agent config: %w", role, err)
	}

	esc := extensionServiceConfig{
		talosHeader: talosHeader{APIVersion: "v1alpha1", Kind: "ExtensionServiceConfig", Name: extensionService},
		ConfigFiles: append([]configFile{{MountPath: agentConfigPath, Content: agent.String()}}, certs...),
	}

	docs := []any{esc}
	docs = append(docs, firewallRules(role, nodes, subnets)...)

	out, err := marshalDocuments(docs...)
	if err != nil {
		return nil, err
	}

	if _, err := checkAgentDocument(out); err != nil {
		return nil, fmt.Errorf("the %s patch would not work (a bug in lbctl, or an input it should have refused): %w", role, err)
	}

	header := fmt.Sprintf("# talos-lb: machine-config patch for the %s nodes, written by lbctl gen config.\n"+
		"# It holds the agent's private key. Check it with: lbctl validate <file>\n", role)

	return append([]byte(header), out...), nil
}

// firewallRules open the agent API to the given subnets and, on control-plane
// nodes, the election port to the other control-plane nodes only. Without
// subnets there are none: Talos's host firewall accepts everything unless
// its default action was set to block.
func firewallRules(role config.Role, nodes []controlPlaneNode, subnets []netip.Prefix) []any {
	if len(subnets) == 0 {
		return nil
	}

	rule := func(name string, port int, proto string, from []netip.Prefix) networkRuleConfig {
		r := networkRuleConfig{
			talosHeader:  talosHeader{APIVersion: "v1alpha1", Kind: "NetworkRuleConfig", Name: name},
			PortSelector: portSelector{Ports: []int{port}, Protocol: proto},
		}

		for _, p := range from {
			r.Ingress = append(r.Ingress, ingressRule{Subnet: p.String()})
		}

		return r
	}

	rules := []any{
		rule("talos-lb-api", agentAPIPort, "tcp", subnets),
		// memberlist probes over UDP and syncs state over TCP.
		rule("talos-lb-members-udp", config.DefaultMembersPort, "udp", subnets),
		rule("talos-lb-members-tcp", config.DefaultMembersPort, "tcp", subnets),
	}

	if role == config.RoleControlPlane && len(nodes) > 0 {
		peers := make([]netip.Prefix, 0, len(nodes))
		for _, n := range nodes {
			peers = append(peers, netip.PrefixFrom(n.IP, n.IP.BitLen()))
		}

		rules = append(rules, rule("talos-lb-election", electionPort, "tcp", peers))
	}

	return rules
}

// readSecrets reads files written by `lbctl gen secrets`.
func readSecrets(dir string, files ...string) ([][]byte, error) {
	out := make([][]byte, 0, len(files))

	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("reading secrets (run `lbctl gen secrets` first?): %w", err)
		}

		out = append(out, b)
	}

	return out, nil
}

// writeOutputs writes the patches and the client config, readable by their
// owner only: all hold private keys. Nothing is written if any would be replaced
// without --force, so a half-updated set never mixes two generations.
func writeOutputs(dir string, force bool, cp, worker []byte, lbconfig *client.Config) error {
	files := []string{"controlplane.yaml", "worker.yaml", "lbconfig"}

	if !force {
		for _, f := range files {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				return fmt.Errorf("%s exists; pass --force to replace it", filepath.Join(dir, f))
			}
		}
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}

	for i, data := range [][]byte{cp, worker} {
		if err := os.WriteFile(filepath.Join(dir, files[i]), data, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", files[i], err)
		}
	}

	return lbconfig.Save(filepath.Join(dir, files[2]))
}
