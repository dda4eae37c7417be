// Package version holds the build's version, stamped by the linker
// (-X github.com/talos-lb/talos-lb/pkg/version.Version=...).
package version

// Version of this build; "dev" when built without the Makefile.
var Version = "dev"

// Name is the product name shown by every binary.
const Name = "talos-lb"

// String is what `--version` prints.
func String() string {
	return Name + " " + Version
}
