// Command images builds talos-lb's container images without a Docker engine,
// which the build machines do not have: a directory tree becomes a one-layer
// image, written reproducibly as an OCI image layout and as a tarball that
// `docker load` and `crane push` accept. It lives in its own module so
// go-containerregistry never becomes a dependency of talos-lb. Pushing is left
// to those tools: a machine with a registry to push to has them.
//
//	images build -root _out/extension -ref talos-lb/extension:v0.1.0 -out _out/images
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || args[0] != "build" {
		return fmt.Errorf("usage: images build [flags] (-h for the flags)")
	}

	return runBuild(args[1:])
}
