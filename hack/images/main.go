// Command images builds talos-lb's container images without a Docker engine,
// which the build machines do not have: a directory tree becomes a one-layer
// image, written reproducibly as an OCI image layout and as a tarball that
// `docker load`, `crane push` and this command's push accept. It lives in its
// own module so go-containerregistry never becomes a dependency of talos-lb.
//
//	images build -root _out/extension -ref talos-lb/extension:v0.1.0 -out _out/images
//	images push -tarball _out/images/extension.tar -ref 127.0.0.1:5005/talos-lb/extension:v0.1.0 -insecure
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
	if len(args) == 0 {
		return fmt.Errorf("usage: images build|push [flags] (-h for the flags)")
	}

	switch args[0] {
	case "build":
		return runBuild(args[1:])
	case "push":
		return runPush(args[1:])
	default:
		return fmt.Errorf("unknown command %q (build or push)", args[0])
	}
}
