// Package binaries finds (or builds once per test run) the real lb-agent and
// lbctl executables that the integration tiers start as processes.
package binaries

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// EnvDir names a directory holding prebuilt binaries (the Makefile sets it).
const EnvDir = "LB_BIN_DIR"

var (
	once  sync.Once
	dir   string
	errOf error
)

// Path returns the path of the named binary (lb-agent, lbctl, lb-controller).
func Path(name string) (string, error) {
	once.Do(func() {
		if d := os.Getenv(EnvDir); d != "" {
			dir = d

			return
		}

		dir, errOf = build()
	})

	if errOf != nil {
		return "", errOf
	}

	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("binary %s: %w (run make build, or unset %s)", name, err, EnvDir)
	}

	return p, nil
}

// build compiles the binaries into a temporary directory, for `go test` run by hand.
func build() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")

	out, err := os.MkdirTemp("", "talos-lb-bin-")
	if err != nil {
		return "", fmt.Errorf("creating binary directory: %w", err)
	}

	cmd := exec.Command("go", "build", "-o", out+"/", "./cmd/lb-agent", "./cmd/lbctl", "./cmd/lb-controller")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")

	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building binaries: %w\n%s", err, b)
	}

	return out, nil
}
