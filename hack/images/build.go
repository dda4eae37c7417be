package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// spec is one image to build.
type spec struct {
	root       string
	ref        name.Tag
	arch       string
	entrypoint []string
	user       string
	// created stamps the layer's files, the history and the config, so the
	// same tree always gives the same digest.
	created time.Time
}

func runBuild(args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	root := fs.String("root", "", "directory that becomes the image's / (required)")
	ref := fs.String("ref", "", "image name and tag, e.g. talos-lb/extension:v0.1.0 (required)")
	out := fs.String("out", "_out/images", "directory for <name>.tar and <name>.oci/, <name> being the last path element of -ref")
	arch := fs.String("arch", runtime.GOARCH, "architecture of the binaries in the tree")
	entrypoint := fs.String("entrypoint", "", "entrypoint of a runnable image; empty for a data image such as a Talos extension")
	user := fs.String("user", "", "user the entrypoint runs as, e.g. 65532:65532")

	if err := fs.Parse(args); err != nil {
		return err
	}

	if *root == "" || *ref == "" {
		return fmt.Errorf("build: -root and -ref are required")
	}

	tag, err := name.NewTag(*ref)
	if err != nil {
		return fmt.Errorf("build: -ref: %w", err)
	}

	created, err := sourceDateEpoch()
	if err != nil {
		return err
	}

	s := spec{root: *root, ref: tag, arch: *arch, user: *user, created: created}
	if *entrypoint != "" {
		s.entrypoint = []string{*entrypoint}
	}

	img, err := s.image()
	if err != nil {
		return err
	}

	base := filepath.Base(tag.RepositoryStr())

	if err := write(img, tag, filepath.Join(*out, base)); err != nil {
		return err
	}

	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("digest of %s: %w", tag, err)
	}

	fmt.Printf("%s %s -> %s.tar, %s.oci\n", tag, digest, filepath.Join(*out, base), filepath.Join(*out, base))

	return nil
}

// sourceDateEpoch follows the reproducible-builds convention; unset means
// the Unix epoch rather than now, so builds never differ by accident.
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}

	sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH: not a number of seconds: %q", v)
	}

	return time.Unix(sec, 0).UTC(), nil
}

func (s spec) image() (v1.Image, error) {
	layer, err := treeLayer(s.root, s.created)
	if err != nil {
		return nil, err
	}

	img, err := mutate.Append(
		mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON),
		mutate.Addendum{
			Layer:     layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: s.created}, CreatedBy: "talos-lb hack/images: " + filepath.Base(s.root)},
		},
	)
	if err != nil {
		return nil, fmt.Errorf("adding layer: %w", err)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading image config: %w", err)
	}

	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = s.arch
	cfg.Created = v1.Time{Time: s.created}
	cfg.Config.Entrypoint = s.entrypoint
	cfg.Config.User = s.user

	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("setting image config: %w", err)
	}

	return img, nil
}

// write replaces base.oci (an OCI layout holding just this image) and
// base.tar: appending to an old layout would keep stale images in it.
func write(img v1.Image, tag name.Tag, base string) error {
	dir := base + ".oci"

	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing old %s: %w", dir, err)
	}

	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("creating OCI layout %s: %w", dir, err)
	}

	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return fmt.Errorf("writing OCI layout %s: %w", dir, err)
	}

	if err := tarball.WriteToFile(base+".tar", tag, img); err != nil {
		return fmt.Errorf("writing %s.tar: %w", base, err)
	}

	return nil
}
