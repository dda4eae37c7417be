package main

import (
	"flag"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// runPush uploads an image tarball (ours, or one Talos's imager wrote) to a
// registry, with the credentials `docker login` stored, if any.
func runPush(args []string) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	file := fs.String("tarball", "", "image tarball to push (required)")
	ref := fs.String("ref", "", "where to push it, registry/repository:tag (required)")
	insecure := fs.Bool("insecure", false, "plain HTTP, for a local registry")

	if err := fs.Parse(args); err != nil {
		return err
	}

	if *file == "" || *ref == "" {
		return fmt.Errorf("push: -tarball and -ref are required")
	}

	var opts []name.Option
	if *insecure {
		opts = append(opts, name.Insecure)
	}

	dst, err := name.ParseReference(*ref, opts...)
	if err != nil {
		return fmt.Errorf("push: -ref: %w", err)
	}

	img, err := tarball.ImageFromPath(*file, nil)
	if err != nil {
		return fmt.Errorf("push: reading %s: %w", *file, err)
	}

	if err := remote.Write(dst, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("push: %s to %s: %w", *file, dst, err)
	}

	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("push: digest of %s: %w", *file, err)
	}

	fmt.Printf("%s@%s\n", dst.Context(), digest)

	return nil
}
