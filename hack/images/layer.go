package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// treeLayer packs root into one layer. Owners, modes and times are
// normalised rather than copied, because they would otherwise depend on the
// builder's umask, user and clock: everything is owned by root, directories
// and executables are 0755, other files 0644 (Talos refuses world-writable
// files in extensions), and every time is mtime.
func treeLayer(root string, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer

	tw := tar.NewWriter(&buf)

	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}

		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}

		return addEntry(tw, path, filepath.ToSlash(rel), d, mtime)
	})
	if err != nil {
		return nil, fmt.Errorf("packing %s: %w", root, err)
	}

	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("packing %s: %w", root, err)
	}

	data := buf.Bytes()

	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer of %s: %w", root, err)
	}

	return layer, nil
}

func addEntry(tw *tar.Writer, path, name string, d fs.DirEntry, mtime time.Time) error {
	info, err := d.Info()
	if err != nil {
		return err
	}

	hdr := &tar.Header{Name: name, ModTime: mtime, Uname: "root", Gname: "root", Format: tar.FormatPAX}

	switch mode := info.Mode(); {
	case mode.IsDir():
		hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, name+"/", 0o755
	case mode.IsRegular():
		hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, info.Size(), 0o644
		if mode&0o111 != 0 {
			hdr.Mode = 0o755
		}
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return err
		}

		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, target, 0o777
	default:
		// Talos refuses special files in extensions; no image of ours needs one.
		return fmt.Errorf("%s: unsupported file type %s", name, mode.Type())
	}

	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}

	if hdr.Typeflag != tar.TypeReg {
		return nil
	}

	f, err := os.Open(path)
	if err != nil {
		return err
	}

	_, err = io.Copy(tw, f)

	return errors.Join(err, f.Close())
}
