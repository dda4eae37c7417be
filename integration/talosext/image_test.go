package talosext_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The OCI image layout is read here with the standard library alone, not
// with the library that wrote it, so a bug there cannot hide itself.
type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations"`
}

type ociLayout struct{ dir string }

func (l ociLayout) blob(t *testing.T, d ociDescriptor) []byte {
	t.Helper()

	algo, hex, ok := strings.Cut(d.Digest, ":")
	if !ok {
		t.Fatalf("bad digest %q", d.Digest)
	}

	b, err := os.ReadFile(filepath.Join(l.dir, "blobs", algo, hex))
	if err != nil {
		t.Fatal(err)
	}

	return b
}

func (l ociLayout) decode(t *testing.T, data []byte, v any) {
	t.Helper()

	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

// image returns the layout's only image: its config and its layers' files.
func (l ociLayout) image(t *testing.T) (config struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
}, files map[string]*tar.Header, contents map[string][]byte,
) {
	t.Helper()

	index, err := os.ReadFile(filepath.Join(l.dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}

	var idx struct{ Manifests []ociDescriptor }
	l.decode(t, index, &idx)

	if len(idx.Manifests) != 1 {
		t.Fatalf("want one image in %s, got %d", l.dir, len(idx.Manifests))
	}

	var manifest struct {
		Config ociDescriptor
		Layers []ociDescriptor
	}
	l.decode(t, l.blob(t, idx.Manifests[0]), &manifest)
	l.decode(t, l.blob(t, manifest.Config), &config)

	files, contents = map[string]*tar.Header{}, map[string][]byte{}

	for _, layer := range manifest.Layers {
		zr, err := gzip.NewReader(bytes.NewReader(l.blob(t, layer)))
		if err != nil {
			t.Fatal(err)
		}

		tr := tar.NewReader(zr)

		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}

			if err != nil {
				t.Fatal(err)
			}

			files[hdr.Name] = hdr
			if contents[hdr.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}

	return config, files, contents
}

func TestExtensionImage(t *testing.T) {
	cfg, files, contents := ociLayout{filepath.Join(imagesDir(t), "extension.oci")}.image(t)

	if cfg.OS != "linux" || cfg.Architecture == "" {
		t.Errorf("image platform %s/%s", cfg.OS, cfg.Architecture)
	}

	for name, hdr := range files {
		top, _, _ := strings.Cut(name, "/")
		if top != "manifest.yaml" && top != "rootfs" {
			t.Errorf("%s: Talos wants nothing beside manifest.yaml and rootfs/", name)
		}

		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.Mode&0o002 != 0 {
			t.Errorf("%s: uid %d gid %d mode %o, want root-owned and not world-writable", name, hdr.Uid, hdr.Gid, hdr.Mode)
		}
	}

	// The image carries exactly the directory the other tests validate.
	manifest, err := os.ReadFile(filepath.Join(extensionDir(t), "manifest.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	if !bytes.Equal(contents["manifest.yaml"], manifest) {
		t.Error("the image's manifest.yaml differs from the extension directory's")
	}

	agent := "rootfs/" + containerRoot + "/lb-agent"
	if hdr := files[agent]; hdr == nil || hdr.Mode != 0o755 {
		t.Fatalf("%s missing or not 0755: %+v", agent, hdr)
	}

	checkStaticAndRuns(t, contents[agent])
}

// checkStaticAndRuns: Talos runs the agent in a container of its own files
// only, with no libc to load, so the binary must be static.
func checkStaticAndRuns(t *testing.T, binary []byte) {
	t.Helper()

	f, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		t.Fatalf("lb-agent is not ELF: %v", err)
	}

	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("lb-agent has a program interpreter (PT_INTERP): it is dynamically linked")
		}
	}

	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("lb-agent needs shared libraries %v", libs)
	}

	path := filepath.Join(t.TempDir(), "lb-agent")
	if err := os.WriteFile(path, binary, 0o755); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("lb-agent --version: %v\n%s", err, out)
	}

	want := "talos-lb "
	if v := os.Getenv("LB_VERSION"); v != "" {
		want += v
	}

	if !strings.HasPrefix(string(out), want) {
		t.Errorf("lb-agent --version printed %q, want %q", out, want)
	}
}
