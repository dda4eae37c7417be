package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// tree writes a small extension-like tree with sloppy modes, as a checkout
// under umask 0 would have them.
func tree(t *testing.T) string {
	t.Helper()

	root := t.TempDir()
	bin := filepath.Join(root, "rootfs", "usr", "local", "lib", "containers", "x")

	if err := os.MkdirAll(bin, 0o777); err != nil {
		t.Fatal(err)
	}

	for path, mode := range map[string]os.FileMode{
		filepath.Join(root, "manifest.yaml"): 0o666,
		filepath.Join(bin, "x"):              0o777,
	} {
		if err := os.WriteFile(path, []byte(path), mode); err != nil {
			t.Fatal(err)
		}

		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}

	if err := os.Chmod(bin, 0o777); err != nil {
		t.Fatal(err)
	}

	return root
}

func build(t *testing.T, root, out string, epoch string) {
	t.Helper()
	t.Setenv("SOURCE_DATE_EPOCH", epoch)

	if err := run([]string{"build", "-root", root, "-ref", "talos-lb/extension:test", "-out", out, "-arch", "amd64"}); err != nil {
		t.Fatal(err)
	}
}

func digest(t *testing.T, file string) string {
	t.Helper()

	img, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		t.Fatal(err)
	}

	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}

	return d.String()
}

func TestBuildIsReproducible(t *testing.T) {
	root := tree(t)
	a, b := t.TempDir(), t.TempDir()

	build(t, root, a, "1700000000")

	// Touching the tree changes mtimes; the image must not notice.
	now := time.Now()
	if err := os.Chtimes(filepath.Join(root, "manifest.yaml"), now, now); err != nil {
		t.Fatal(err)
	}

	build(t, root, b, "1700000000")

	if da, db := digest(t, filepath.Join(a, "extension.tar")), digest(t, filepath.Join(b, "extension.tar")); da != db {
		t.Fatalf("same tree, different digests: %s and %s", da, db)
	}

	if _, err := os.Stat(filepath.Join(a, "extension.oci", "index.json")); err != nil {
		t.Fatalf("no OCI layout: %v", err)
	}
}

func TestLayerNormalisesOwnersModesAndTimes(t *testing.T) {
	out := t.TempDir()
	build(t, tree(t), out, "1700000000")

	img, err := tarball.ImageFromPath(filepath.Join(out, "extension.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}

	if cfg.OS != "linux" || cfg.Architecture != "amd64" || len(cfg.Config.Entrypoint) != 0 {
		t.Errorf("config: os %q arch %q entrypoint %q, want linux amd64 and none", cfg.OS, cfg.Architecture, cfg.Config.Entrypoint)
	}

	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer, got %d (%v)", len(layers), err)
	}

	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()

	want := map[string]int64{
		"manifest.yaml":                       0o644,
		"rootfs/":                             0o755,
		"rootfs/usr/local/lib/containers/x/":  0o755,
		"rootfs/usr/local/lib/containers/x/x": 0o755,
	}
	epoch := time.Unix(1700000000, 0)

	tr := tar.NewReader(rc)

	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}

		if err != nil {
			t.Fatal(err)
		}

		if hdr.Uid != 0 || hdr.Gid != 0 || !hdr.ModTime.Equal(epoch) {
			t.Errorf("%s: uid %d gid %d mtime %s, want 0 0 %s", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime, epoch)
		}

		if m, ok := want[hdr.Name]; ok {
			if hdr.Mode != m {
				t.Errorf("%s: mode %o, want %o", hdr.Name, hdr.Mode, m)
			}

			delete(want, hdr.Name)
		}
	}

	if len(want) > 0 {
		t.Errorf("missing from the layer: %v", want)
	}
}
