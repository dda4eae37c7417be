package talosext_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	coreconfig "github.com/siderolabs/talos/pkg/machinery/config"
	configdoc "github.com/siderolabs/talos/pkg/machinery/config/config"
	"github.com/siderolabs/talos/pkg/machinery/config/configloader"
	"github.com/siderolabs/talos/pkg/machinery/config/configpatcher"
	"github.com/siderolabs/talos/pkg/machinery/config/encoder"
	"github.com/siderolabs/talos/pkg/machinery/config/generate"
	"github.com/siderolabs/talos/pkg/machinery/config/machine"
	"github.com/siderolabs/talos/pkg/machinery/config/types/v1alpha1"
	"github.com/siderolabs/talos/pkg/machinery/config/validation"
	"go.yaml.in/yaml/v4"
)

// metal is the runtime mode of an installed node, for Talos's validation.
type metal struct{}

func (metal) String() string        { return "metal" }
func (metal) RequiresInstall() bool { return true }
func (metal) InContainer() bool     { return false }

// machineConfig is what `talosctl gen config` makes for a Talos 1.13 cluster.
func machineConfig(t *testing.T, typ machine.Type, opts ...generate.Option) coreconfig.Provider {
	t.Helper()

	opts = append([]generate.Option{generate.WithVersionContract(coreconfig.TalosVersion1_13), generate.WithInstallDisk("/dev/vda")}, opts...)

	in, err := generate.NewInput("dev", "https://10.5.0.100:6443", "1.35.0", opts...)
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := in.Config(typ)
	if err != nil {
		t.Fatal(err)
	}

	return cfg
}

// applied is base with the patch files applied in order, as `talosctl gen
// config --config-patch` or `talosctl patch mc` would, then encoded and
// loaded again the way a node loads its stored config, and validated strictly.
func applied(t *testing.T, base coreconfig.Provider, files ...string) coreconfig.Provider {
	t.Helper()

	args := make([]string, 0, len(files))
	for _, f := range files {
		args = append(args, "@"+f)
	}

	patches, err := configpatcher.LoadPatches(args)
	if err != nil {
		t.Fatalf("loading %v: %v", files, err)
	}

	out, err := configpatcher.Apply(configpatcher.WithConfig(base), patches)
	if err != nil {
		t.Fatalf("applying %v: %v", files, err)
	}

	data, err := out.Bytes()
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := configloader.NewFromBytes(data)
	if err != nil {
		t.Fatalf("Talos cannot load the patched config: %v", err)
	}

	warnings, err := cfg.Validate(metal{}, validation.WithStrict())
	if err != nil {
		t.Fatalf("patched with %v: %v (warnings %v)", files, err, warnings)
	}

	return cfg
}

// agentCheck runs `lbctl validate` on the whole patched machine config: the
// agent config must parse and find every file it names mounted.
func agentCheck(t *testing.T, cfg coreconfig.Provider) {
	t.Helper()

	data, err := cfg.EncodeBytes(encoder.WithComments(encoder.CommentsDisabled))
	if err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(t.TempDir(), "machineconfig.yaml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}

	lbctl(t, "validate", file)
}

// agentConfig is the agent config the ExtensionServiceConfig mounts.
func agentConfig(t *testing.T, cfg coreconfig.Provider) string {
	t.Helper()

	for _, esc := range cfg.ExtensionServiceConfigs() {
		if esc.Name() != "lb-agent" {
			continue
		}

		for _, f := range esc.ConfigFiles() {
			if f.MountPath() == agentConfigPath {
				return f.Content()
			}
		}
	}

	t.Fatal("no lb-agent ExtensionServiceConfig mounting the agent config")

	return ""
}

// genConfig runs `lbctl gen secrets` and `lbctl gen config` with args and
// returns the directory holding controlplane.yaml and worker.yaml.
func genConfig(t *testing.T, args ...string) string {
	t.Helper()

	dir := t.TempDir()
	lbctl(t, "gen", "secrets", "-o", filepath.Join(dir, "secrets"))
	lbctl(t, append([]string{"gen", "config", "--secrets", filepath.Join(dir, "secrets"), "-o", filepath.Join(dir, "out")}, args...)...)

	return filepath.Join(dir, "out")
}

var threeControlPlanes = []string{"--control-plane", "dev-controlplane-1=10.5.0.2,dev-controlplane-2=10.5.0.3,dev-controlplane-3=10.5.0.4"}

func TestGenConfigPatches(t *testing.T) {
	out := genConfig(t, append(threeControlPlanes, "--vip", "10.5.0.100", "--link", "eth0", "--firewall-subnets", "10.5.0.0/24")...)

	cp := applied(t, machineConfig(t, machine.TypeControlPlane), filepath.Join(out, "controlplane.yaml"))
	agentCheck(t, cp)

	if n := len(cp.NetworkRules().Rules()); n != 4 {
		t.Errorf("control plane: %d firewall rules, want the API's, the gossip's (UDP and TCP) and the election's", n)
	}

	if !strings.Contains(agentConfig(t, cp), "dev-controlplane-3") {
		t.Error("control-plane agent config lacks the election peers")
	}

	worker := applied(t, machineConfig(t, machine.TypeWorker), filepath.Join(out, "worker.yaml"))
	agentCheck(t, worker)

	if n := len(worker.NetworkRules().Rules()); n != 3 {
		t.Errorf("worker: %d firewall rules, want the API's and the gossip's (UDP and TCP)", n)
	}
}

// examples lists the example patches, and records which ones the tests use,
// so an example nobody checks fails TestEveryExampleIsChecked.
var (
	examplesUsed sync.Map
	examplesDir  = filepath.Join(repo(), "extension", "examples")
)

func example(name string) string {
	examplesUsed.Store(name, true)

	return filepath.Join(examplesDir, name)
}

// strategy applies `lbctl gen config`'s patch and then the strategy's own, as
// the examples tell users to, and checks what the agent would run.
func strategy(t *testing.T, typ machine.Type, genArgs []string, files ...string) coreconfig.Provider {
	t.Helper()

	base := "controlplane.yaml"
	if typ == machine.TypeWorker {
		base = "worker.yaml"
	}

	paths := []string{filepath.Join(genConfig(t, genArgs...), base)}
	for _, f := range files {
		paths = append(paths, example(f))
	}

	cfg := applied(t, machineConfig(t, typ), paths...)
	agentCheck(t, cfg)

	// Talos merges configFiles by mountPath: the strategy's agent config
	// replaces gen config's, whose certificates stay.
	if strings.Contains(agentConfig(t, cfg), "written by lbctl gen config") {
		t.Error("the agent config is gen config's, not the strategy's")
	}

	return cfg
}

func TestHomelab(t *testing.T) {
	strategy(t, machine.TypeControlPlane, threeControlPlanes, "homelab/controlplane.yaml")
	strategy(t, machine.TypeWorker, threeControlPlanes, "homelab/worker.yaml")
}

func TestHomelabRemovesTheNativeVIP(t *testing.T) {
	t.Run("Layer2VIPConfig", func(t *testing.T) {
		withVIP := filepath.Join(t.TempDir(), "native-vip.yaml")
		if err := os.WriteFile(withVIP, []byte("apiVersion: v1alpha1\nkind: Layer2VIPConfig\nname: 10.5.0.100\nlink: eth0\n"), 0o600); err != nil {
			t.Fatal(err)
		}

		cp := applied(t, machineConfig(t, machine.TypeControlPlane), withVIP)
		if !hasKind(cp, "Layer2VIPConfig") {
			t.Fatal("setup: no native VIP to remove")
		}

		if hasKind(applied(t, cp, example("homelab/remove-native-vip.yaml")), "Layer2VIPConfig") {
			t.Error("remove-native-vip.yaml left the Layer2VIPConfig in place")
		}
	})

	t.Run("machine.network.interfaces[].vip", func(t *testing.T) {
		cp := machineConfig(t, machine.TypeControlPlane, generate.WithNetworkOptions(
			v1alpha1.WithNetworkInterfaceVirtualIP(v1alpha1.IfaceByName("eth0"), "10.5.0.100"),
		))
		if len(interfaces(cp)) != 1 || interfaces(cp)[0].DeviceVIPConfig == nil {
			t.Fatal("setup: no native VIP to remove")
		}

		after := interfaces(applied(t, cp, example("homelab/remove-legacy-vip.yaml"), example("homelab/restore-interface.yaml")))
		if len(after) != 1 || after[0].DeviceInterface != "eth0" || after[0].DeviceVIPConfig != nil || after[0].DeviceDHCP == nil {
			t.Errorf("want eth0 back with dhcp and without a vip, got %+v", after)
		}
	})
}

func hasKind(cfg coreconfig.Provider, kind string) bool {
	return slices.ContainsFunc(cfg.Documents(), func(d configdoc.Document) bool { return d.Kind() == kind })
}

//nolint:staticcheck // the legacy interfaces list is what remove-legacy-vip.yaml is for
func interfaces(cfg coreconfig.Provider) v1alpha1.NetworkDeviceList {
	if n := cfg.RawV1Alpha1().MachineConfig.MachineNetwork; n != nil {
		return n.NetworkInterfaces
	}

	return nil
}

func TestEnterprise(t *testing.T) {
	strategy(t, machine.TypeControlPlane, threeControlPlanes[:2], "enterprise/controlplane.yaml")
	strategy(t, machine.TypeWorker, threeControlPlanes[:2], "enterprise/worker.yaml")

	cp := strategy(t, machine.TypeControlPlane, append(threeControlPlanes, "--vip", "10.5.0.100", "--link", "eth0"),
		"enterprise/controlplane-ipvs.yaml")

	var modules []string
	for _, m := range cp.Machine().Kernel().Modules() {
		modules = append(modules, m.Name())
	}

	if !slices.Contains(modules, "ip_vs") || !slices.Contains(modules, "ip_vs_mh") {
		t.Errorf("kernel modules %v: want ip_vs and ip_vs_mh for IPVS", modules)
	}

	if !strings.Contains(agentConfig(t, cp), "ipvs:") {
		t.Error("the IPVS variant does not turn IPVS on")
	}
}

// The Talos 1.14 KernelModuleConfig kind is unknown to machinery 1.13, so its
// file is checked against the 1.14 schema (apiVersion, kind, name,
// parameters) here, and 1.13 is shown to refuse it, as the file says.
func TestEnterpriseKernelModulesForTalos114(t *testing.T) {
	file := example("enterprise/kernel-modules-v1.14.yaml")

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)

	var names []string

	for {
		var doc struct {
			APIVersion string   `yaml:"apiVersion"`
			Kind       string   `yaml:"kind"`
			Name       string   `yaml:"name"`
			Parameters []string `yaml:"parameters"`
		}

		if err := dec.Decode(&doc); err != nil {
			break
		}

		if doc.APIVersion != "v1alpha1" || doc.Kind != "KernelModuleConfig" || doc.Name == "" {
			t.Errorf("not a KernelModuleConfig document: %+v", doc)
		}

		names = append(names, doc.Name)
	}

	if !slices.Equal(names, []string{"ip_vs", "ip_vs_mh"}) {
		t.Errorf("modules %v, want ip_vs and ip_vs_mh", names)
	}

	if _, err := configpatcher.LoadPatches([]string{"@" + file}); err == nil || !strings.Contains(err.Error(), "KernelModuleConfig") {
		t.Errorf("Talos 1.13 should refuse the 1.14 kind, got %v", err)
	}
}

func TestSingleNode(t *testing.T) {
	const label = "node.kubernetes.io/exclude-from-external-load-balancers"

	if _, ok := machineConfig(t, machine.TypeControlPlane).Machine().NodeLabels()[label]; !ok {
		t.Fatalf("setup: Talos 1.13 no longer labels control-plane nodes with %s", label)
	}

	cp := strategy(t, machine.TypeControlPlane, []string{"--control-plane", "dev-controlplane-1=10.5.0.2", "--vip", "10.5.0.100", "--link", "eth0"},
		"single-node/controlplane.yaml")

	if _, ok := cp.Machine().NodeLabels()[label]; ok {
		t.Errorf("%s is still set", label)
	}

	if !cp.Cluster().ScheduleOnControlPlanes() {
		t.Error("workloads cannot run on the only node")
	}
}

// uncheckedExamples lists the example files no test used.
func uncheckedExamples() ([]string, error) {
	var unused []string

	err := filepath.WalkDir(examplesDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".yaml" {
			return err
		}

		rel, err := filepath.Rel(examplesDir, path)
		if _, used := examplesUsed.Load(filepath.ToSlash(rel)); !used {
			unused = append(unused, rel)
		}

		return err
	})

	return unused, err
}
