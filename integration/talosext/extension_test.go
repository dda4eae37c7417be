package talosext_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/siderolabs/talos/pkg/machinery/extensions"
	"github.com/siderolabs/talos/pkg/machinery/extensions/services"
	"github.com/siderolabs/talos/pkg/machinery/nethelpers"
	"go.yaml.in/yaml/v4"
)

func TestExtensionPassesTalosValidation(t *testing.T) {
	ext, err := extensions.Load(extensionDir(t))
	if err != nil {
		t.Fatal(err)
	}

	if err := ext.Validate(
		extensions.WithValidateConstraints(),
		extensions.WithValidateContents(),
		extensions.WithTalosVersion(&talosVersion),
	); err != nil {
		t.Fatalf("Talos %s refuses the extension: %v", talosVersion, err)
	}

	m := ext.Manifest.Metadata
	if m.Name != "talos-lb" || m.Author == "" || m.Description == "" {
		t.Errorf("manifest metadata incomplete: %+v", m)
	}

	if want := os.Getenv("LB_VERSION"); want != "" && m.Version != want {
		t.Errorf("manifest version %q, want the build's %q", m.Version, want)
	}

	// The constraint must mean something: older releases are refused.
	older := talosVersion
	older.Minor--

	if err := ext.Validate(extensions.WithValidateConstraints(), extensions.WithTalosVersion(&older)); err == nil {
		t.Errorf("Talos %s accepted, but the manifest says %s", older, m.Compatibility.Talos.Version)
	}
}

// Talos's own world-writable check looks at fs.DirEntry.Type(), which holds
// no permission bits, so it never fires (machinery v1.13.9): check here.
func TestExtensionHasNoWorldWritableFiles(t *testing.T) {
	err := filepath.WalkDir(extensionDir(t), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}

		info, err := d.Info()
		if err != nil {
			return err
		}

		if info.Mode().Perm()&0o002 != 0 {
			t.Errorf("%s is world-writable (%s)", path, info.Mode())
		}

		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// loadSpec reads the service spec strictly: Talos ignores unknown keys, so a
// misspelt one would silently do nothing on a node.
func loadSpec(t *testing.T) *services.Spec {
	t.Helper()

	data, err := os.ReadFile(filepath.Join(extensionDir(t), "rootfs", serviceSpecPath))
	if err != nil {
		t.Fatal(err)
	}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)

	var spec services.Spec
	if err := dec.Decode(&spec); err != nil {
		t.Fatalf("service spec: %v", err)
	}

	if err := spec.Validate(); err != nil {
		t.Fatalf("service spec: %v", err)
	}

	return &spec
}

func TestServiceSpec(t *testing.T) {
	spec := loadSpec(t)

	if spec.Name != "lb-agent" || spec.Restart != services.RestartAlways {
		t.Errorf("name %q restart %s, want lb-agent and always", spec.Name, spec.Restart)
	}

	var configuration, network bool

	for _, d := range spec.Depends {
		configuration = configuration || d.Configuration
		network = network || slices.Contains(d.Network, nethelpers.StatusAddresses)
	}

	if !configuration || !network {
		t.Errorf("depends %+v: want configuration (wait for the ExtensionServiceConfig) and network addresses", spec.Depends)
	}

	if !slices.Contains(spec.Container.Args, "--config="+agentConfigPath) {
		t.Errorf("args %q: want --config=%s, where lbctl gen config mounts the agent config", spec.Container.Args, agentConfigPath)
	}

	var state bool

	for _, m := range spec.Container.Mounts {
		if m.Destination == stateDir {
			state = m.Source == stateDir && slices.Contains(m.Options, "rw") && strings.HasPrefix(m.Source, "/var/")
		}
	}

	if !state {
		t.Errorf("mounts %+v: want %s bound read-write from the same path under /var (it must survive reboots)", spec.Container.Mounts, stateDir)
	}
}

// Talos resolves the entrypoint inside the container's root,
// /usr/local/lib/containers/<name>: it must be an executable there, and the
// container root must hold nothing else.
func TestEntrypointIsTheAgent(t *testing.T) {
	spec := loadSpec(t)
	root := filepath.Join(extensionDir(t), "rootfs", containerRoot)

	st, err := os.Stat(filepath.Join(root, spec.Container.Entrypoint))
	if err != nil {
		t.Fatalf("entrypoint %s not in the container root: %v", spec.Container.Entrypoint, err)
	}

	if !st.Mode().IsRegular() || st.Mode().Perm() != 0o755 {
		t.Errorf("entrypoint mode %s, want a regular file 0755", st.Mode())
	}

	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}

	if len(entries) != 1 || "/"+entries[0].Name() != spec.Container.Entrypoint {
		t.Errorf("container root holds %v, want only %s", entries, spec.Container.Entrypoint)
	}
}
