package images_test

import (
	"archive/tar"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/edgeprov/provisiond/internal/images"
	"github.com/edgeprov/provisiond/internal/registrytest"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// tarDir writes dir as a tar file.
func tarDir(t testing.TB, dir, file string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestImport(t *testing.T) {
	testutil.RequiresRoot(t)
	img := registrytest.Image(t, runtime.GOARCH, registrytest.BusyboxLayer(t), appLayer(t, "imported"))
	idx := registrytest.Index(t, map[string]v1.Image{runtime.GOARCH: img})
	lay := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	layoutTar := filepath.Join(t.TempDir(), "layout.tar")
	tarDir(t, lay, layoutTar)
	save := filepath.Join(t.TempDir(), "save.tar")
	tag, _ := name.NewTag("example.com/app:1")
	if err := tarball.WriteToFile(save, tag, img); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	for _, tc := range []struct {
		name, file string
		want       string // "": docker save, whose digest is the store's own
	}{
		{"layout-dir", lay, idxDigest.Hex},
		{"layout-tar", layoutTar, idxDigest.Hex},
		{"docker-save", save, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No registry at all: an air-gapped node.
			s := images.New(images.Options{Dir: t.TempDir(), Limit: limit})
			got, err := s.Import(t.Context(), tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || (tc.want != "" && got[0].Digest != tc.want) {
				t.Fatalf("Import = %+v, want %s", got, tc.want)
			}
			ref := provision.ImageRef{Registry: "registry.invalid", Repository: "any/name", Digest: got[0].Digest}
			pulled, err := s.Pull(t.Context(), ref)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(s.Lowers(pulled)[0], "app/imported"))
			if err != nil || len(b) != 8000 {
				t.Fatalf("imported layer: %d bytes, %v", len(b), err)
			}
			list, err := s.List()
			if err != nil || len(list) != 1 || !list[0].Imported {
				t.Fatalf("List = %+v, %v", list, err)
			}
		})
	}
	// A blob whose bytes are not its digest is refused.
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.CopyFS(bad, os.DirFS(lay)); err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	ld, _ := ls[1].Digest()
	f, err := os.OpenFile(filepath.Join(bad, "blobs/sha256", ld.Hex), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Seek(10, io.SeekStart)
	f.Write([]byte("XXXX"))
	f.Close()
	s := images.New(images.Options{Dir: t.TempDir(), Limit: limit})
	if _, err := s.Import(t.Context(), bad); err == nil {
		t.Fatal("a layout with a tampered blob was imported")
	}
	if s.Blobs().Has(idxDigest.Hex) {
		t.Fatal("the image of a refused import is present")
	}
}
