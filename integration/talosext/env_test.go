// Package talosext_test checks talos-lb's Talos packaging with Talos's own
// code (github.com/siderolabs/talos/pkg/machinery): the built extension
// directory, its image, the example machine-config patches and what
// `lbctl gen config` writes. It is a module of its own so machinery never
// becomes a dependency of talos-lb; `make test-extension` builds what it
// checks and runs it.
package talosext_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/blang/semver/v4"
)

// talosVersion is the Talos release the extension is validated against: the
// machinery version in go.mod, and the lower bound of the manifest's
// compatibility constraint.
var talosVersion = semver.MustParse("1.13.9")

// Where the extension puts things; lbctl (gen config, validate) must agree.
const (
	serviceSpecPath = "usr/local/etc/containers/lb-agent.yaml"
	containerRoot   = "usr/local/lib/containers/lb-agent"
	stateDir        = "/var/lib/talos-lb"
	agentConfigPath = "/usr/local/etc/talos-lb/agent.yaml"
)

// repo is the talos-lb checkout this module sits in.
func repo() string {
	_, file, _, _ := runtime.Caller(0)

	return filepath.Join(filepath.Dir(file), "..", "..")
}

// artifact is a path the Makefile passes in an environment variable, with a
// default under _out/ for a run by hand after `make images`.
func artifact(t *testing.T, env, def string) string {
	t.Helper()

	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(repo(), "_out", def)
	}

	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v (run `make test-extension`, or set %s)", p, err, env)
	}

	return p
}

func extensionDir(t *testing.T) string { return artifact(t, "LB_EXTENSION_DIR", "extension") }
func imagesDir(t *testing.T) string    { return artifact(t, "LB_IMAGES_DIR", "images") }
func lbctlPath(t *testing.T) string    { return artifact(t, "LB_LBCTL", "lbctl") }

// lbctl runs the real lbctl and returns its combined output.
func lbctl(t *testing.T, args ...string) string {
	t.Helper()

	out, err := exec.Command(lbctlPath(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("lbctl %v: %v\n%s", args, err, out)
	}

	return string(out)
}

// TestMain fails a full run in which some example patch was checked by no
// test: an example that drifts from what Talos or the agent accepts is worse
// than none.
func TestMain(m *testing.M) {
	code := m.Run()

	if code == 0 && flag.Lookup("test.run").Value.String() == "" {
		unused, err := uncheckedExamples()

		switch {
		case err != nil:
			fmt.Fprintln(os.Stderr, "listing examples:", err)

			code = 1
		case len(unused) > 0:
			fmt.Fprintln(os.Stderr, "example patches no test checks:", unused)

			code = 1
		}
	}

	os.Exit(code)
}
