package lbctl

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/pkg/client"
	"github.com/talos-lb/talos-lb/pkg/config"
)

// secrets runs `lbctl gen secrets` into a temporary directory.
func secrets(t *testing.T) string {
	t.Helper()

	dir := filepath.Join(t.TempDir(), "secrets")
	root := NewRoot()
	root.SetArgs([]string{"gen", "secrets", "-o", dir})
	root.SetOut(&bytes.Buffer{})
	require.NoError(t, root.Execute())

	return dir
}

func threeNodes(secretsDir, out string) *genConfigOptions {
	return &genConfigOptions{
		secrets:         secretsDir,
		outDir:          out,
		controlPlane:    []string{"cp-1=10.5.0.2", "cp-2=10.5.0.3", "cp-3=10.5.0.4"},
		vips:            []string{"10.5.0.100", "fd00::100"},
		link:            "eth0",
		firewallSubnets: []string{"10.5.0.0/24"},
	}
}

func TestGenConfigWritesValidPatchesAndClientConfig(t *testing.T) {
	out := filepath.Join(t.TempDir(), "talos-lb")
	g := &globals{out: &bytes.Buffer{}}

	require.NoError(t, genConfig(g, threeNodes(secrets(t), out)))

	cp, err := os.ReadFile(filepath.Join(out, "controlplane.yaml"))
	require.NoError(t, err)

	cfg, err := checkAgentDocument(cp)
	require.NoError(t, err)
	assert.Equal(t, config.RoleControlPlane, cfg.Node.Role)
	require.NotNil(t, cfg.VIP)
	assert.Equal(t, []string{"10.5.0.100", "fd00::100"}, cfg.VIP.Addresses)
	assert.Len(t, cfg.VIP.Election.Peers, 3)
	assert.Contains(t, string(cp), "name: talos-lb-election")
	require.NotNil(t, cfg.Members, "agents gossip so service IPs fail over without the controller")
	assert.Contains(t, string(cp), "name: talos-lb-members-udp")
	assert.Contains(t, string(cp), "name: talos-lb-members-tcp")

	worker, err := os.ReadFile(filepath.Join(out, "worker.yaml"))
	require.NoError(t, err)

	cfg, err = checkAgentDocument(worker)
	require.NoError(t, err)
	assert.Equal(t, config.RoleWorker, cfg.Node.Role)
	assert.Nil(t, cfg.VIP)
	assert.NotNil(t, cfg.Members)
	assert.NotContains(t, string(worker), "talos-lb-election", "workers take no part in the election")

	lb, err := client.LoadConfig(filepath.Join(out, "lbconfig"))
	require.NoError(t, err)

	ctx, err := lb.Current("")
	require.NoError(t, err)
	assert.Equal(t, []string{"10.5.0.2", "10.5.0.3", "10.5.0.4"}, ctx.Endpoints)

	for _, f := range []string{"controlplane.yaml", "worker.yaml", "lbconfig"} {
		st, err := os.Stat(filepath.Join(out, f))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "%s holds a private key", f)
	}

	// Nothing is replaced by accident.
	require.ErrorContains(t, genConfig(g, threeNodes(secrets(t), out)), "pass --force")
}

func TestGenConfigWithoutVIPOrFirewall(t *testing.T) {
	out := t.TempDir()
	o := &genConfigOptions{secrets: secrets(t), outDir: out, controlPlane: []string{"cp-1=10.5.0.2"}}

	require.NoError(t, genConfig(&globals{out: &bytes.Buffer{}}, o))

	cp, err := os.ReadFile(filepath.Join(out, "controlplane.yaml"))
	require.NoError(t, err)
	assert.NotContains(t, string(cp), "NetworkRuleConfig")

	cfg, err := checkAgentDocument(cp)
	require.NoError(t, err)
	assert.Nil(t, cfg.VIP)
}

func TestGenConfigRefusesBadInput(t *testing.T) {
	dir := secrets(t)

	for name, tc := range map[string]struct {
		edit func(*genConfigOptions)
		want string
	}{
		"no control plane": {func(o *genConfigOptions) { o.controlPlane = nil }, "--control-plane: required"},
		"not name=ip":      {func(o *genConfigOptions) { o.controlPlane = []string{"10.5.0.2"} }, "want hostname=IP"},
		"bad hostname":     {func(o *genConfigOptions) { o.controlPlane = []string{"CP 1=10.5.0.2"} }, "not a hostname"},
		"duplicate":        {func(o *genConfigOptions) { o.controlPlane = []string{"a=10.5.0.2", "b=10.5.0.2"} }, "given twice"},
		"vip is a node":    {func(o *genConfigOptions) { o.vips = []string{"10.5.0.3"} }, "is a node address"},
		"vip without link": {func(o *genConfigOptions) { o.link = "" }, "--link: required"},
		"link not a name":  {func(o *genConfigOptions) { o.link = "eth0\nkind: x" }, "--link: required"},
		"bad subnet":       {func(o *genConfigOptions) { o.firewallSubnets = []string{"10.5.0.0"} }, "not a CIDR"},
		"no secrets":       {func(o *genConfigOptions) { o.secrets = t.TempDir() }, "run `lbctl gen secrets` first"},
	} {
		t.Run(name, func(t *testing.T) {
			o := threeNodes(dir, t.TempDir())
			tc.edit(o)
			require.ErrorContains(t, genConfig(&globals{out: &bytes.Buffer{}}, o), tc.want)
		})
	}
}

const validAgent = `apiVersion: talos-lb.dev/v1alpha1
kind: AgentConfig
node: {role: worker}
api:
  tls: {ca: /usr/local/etc/talos-lb/ca.crt, cert: /usr/local/etc/talos-lb/agent.crt, key: /usr/local/etc/talos-lb/agent.key}
`

// patch wraps an agent config in an ExtensionServiceConfig mounting it and the given files.
func patch(agent string, files ...string) string {
	var b strings.Builder

	b.WriteString("apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: lb-agent\nconfigFiles:\n")
	b.WriteString("  - mountPath: /usr/local/etc/talos-lb/agent.yaml\n    content: |\n")

	for _, l := range strings.Split(strings.TrimSuffix(agent, "\n"), "\n") {
		b.WriteString("      " + l + "\n")
	}

	for _, f := range files {
		b.WriteString("  - {mountPath: " + f + ", content: x}\n")
	}

	return b.String()
}

func TestCheckAgentDocument(t *testing.T) {
	certs := []string{"/usr/local/etc/talos-lb/ca.crt", "/usr/local/etc/talos-lb/agent.crt", "/usr/local/etc/talos-lb/agent.key"}

	for name, tc := range map[string]struct {
		doc  string
		want string // "" = valid
	}{
		"bare agent config":   {validAgent, ""},
		"patch":               {"machine: {nodeLabels: {a: b}}\n---\n" + patch(validAgent, certs...), ""},
		"bad agent config":    {strings.Replace(validAgent, "worker", "boss", 1), `unknown role "boss"`},
		"not a patch":         {"machine: {}\n", "no ExtensionServiceConfig named lb-agent"},
		"certificate missing": {patch(validAgent, certs[:2]...), "names /usr/local/etc/talos-lb/agent.key, which no configFiles entry mounts"},
		"no agent config":     {"apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: lb-agent\nconfigFiles: [{mountPath: /x, content: y}]\n", "nothing mounted at /usr/local/etc/talos-lb/agent.yaml"},
		"two of them":         {patch(validAgent, certs...) + "---\n" + patch(validAgent, certs...), "2 ExtensionServiceConfig documents"},
		"state elsewhere":     {patch(validAgent+"stateDir: /var/run/lb\n", certs...), "stateDir /var/run/lb is not under /var/lib/talos-lb"},
		"relative mount":      {patch(validAgent, append(certs, "etc/x")...), `mountPath "etc/x" must be absolute`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := checkAgentDocument([]byte(tc.doc))
			if tc.want == "" {
				require.NoError(t, err)

				return
			}

			require.ErrorContains(t, err, tc.want)
		})
	}
}
