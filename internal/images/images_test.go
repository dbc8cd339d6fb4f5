package images_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgeprov/provisiond/internal/content"
	"github.com/edgeprov/provisiond/internal/images"
	"github.com/edgeprov/provisiond/internal/layer"
	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/internal/registrytest"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

var limit = layer.Limit{Bytes: 1 << 30, Entries: 1 << 20}

func newStore(t testing.TB, insecure []string, mirrors ...string) *images.Store {
	t.Helper()
	return images.New(images.Options{
		Dir:      t.TempDir(),
		Registry: registry.New(registry.Options{Insecure: insecure, Mirrors: mirrors}),
		Limit:    limit,
	})
}

// via returns ref as seen through a proxy at host.
func via(ref provision.ImageRef, host string) provision.ImageRef {
	ref.Registry = host
	return ref
}

func appLayer(t testing.TB, name string) v1.Layer {
	return registrytest.Layer(t, []registrytest.File{
		{Name: "app/", Type: tar.TypeDir},
		{Name: "app/" + name, Body: []byte(strings.Repeat(name, 1000))},
	})
}

// assertClean checks that a failed pull left no image, download or
// half-unpacked layer.
func assertClean(t testing.TB, s *images.Store, dir string, ref provision.ImageRef) {
	t.Helper()
	if s.Blobs().Has(ref.Digest) {
		t.Errorf("the image's manifest is in the store")
	}
	if dl, _ := s.Blobs().Downloads(); len(dl) != 0 {
		t.Errorf("downloads left: %+v", dl)
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, "layers", "tmp-*"))
	if len(tmps) != 0 {
		t.Errorf("half-unpacked layers left: %v", tmps)
	}
	// The store was empty: what the failed pull stored is gone too.
	if blobs, _ := s.Blobs().List(); len(blobs) != 0 {
		t.Errorf("blobs left: %+v", blobs)
	}
	if layers, _ := os.ReadDir(filepath.Join(dir, "layers", "sha256")); len(layers) != 0 {
		t.Errorf("unpacked layers left: %v", layers)
	}
}

// TestFailedPullKeepsOnlyImages pulls an image, then one sharing its
// base whose own layer is tampered with at the registry: the failure
// removes the second image's config and leaves the first image whole,
// the shared base included.
func TestFailedPullKeepsOnlyImages(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := registrytest.Start(t, registrytest.Options{})
	base := registrytest.BusyboxLayer(t)
	good := registrytest.Image(t, runtime.GOARCH, base, appLayer(t, "good"))
	goodRef := reg.Push(t, "good", good)
	bad := registrytest.Image(t, runtime.GOARCH, base, appLayer(t, "bad"))
	badRef := reg.Push(t, "bad", bad)
	ls, _ := bad.Layers()
	top, _ := ls[1].Digest()
	reg.Tamper(t, top.Hex)
	dir := t.TempDir()
	s := images.New(images.Options{Dir: dir, Registry: registry.New(registry.Options{Insecure: []string{reg.Host}}), Limit: limit})
	if _, err := s.Pull(t.Context(), goodRef); err != nil {
		t.Fatal(err)
	}
	list := func() ([]string, []string) {
		blobs, err := s.Blobs().List()
		if err != nil {
			t.Fatal(err)
		}
		var bs, lays []string
		for _, b := range blobs {
			bs = append(bs, b.Digest)
		}
		es, _ := os.ReadDir(filepath.Join(dir, "layers", "sha256"))
		for _, e := range es {
			lays = append(lays, e.Name())
		}
		slices.Sort(bs)
		return bs, lays
	}
	wantBlobs, wantLayers := list()
	// The manifest and config; the layers are kept unpacked only.
	if len(wantBlobs) != 2 || len(wantLayers) != 2 {
		t.Fatalf("after the good pull: blobs %v, layers %v", wantBlobs, wantLayers)
	}
	if _, err := s.Pull(t.Context(), badRef); !errors.Is(err, content.ErrDigestMismatch) {
		t.Fatalf("Pull of the tampered image = %v", err)
	}
	gotBlobs, gotLayers := list()
	if !slices.Equal(gotBlobs, wantBlobs) || !slices.Equal(gotLayers, wantLayers) {
		t.Fatalf("after the failed pull: blobs %v, layers %v; want those of the good image: %v, %v", gotBlobs, gotLayers, wantBlobs, wantLayers)
	}
	if _, err := s.Pull(t.Context(), goodRef); err != nil {
		t.Fatalf("the good image after the failed pull: %v", err)
	}
}

func TestPullSharesLayers(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.StartProxy(t, reg.Host)
	base := registrytest.BusyboxLayer(t)
	a := reg.Push(t, "app-a", registrytest.Image(t, runtime.GOARCH, base, appLayer(t, "a")))
	b := reg.Push(t, "app-b", registrytest.Image(t, runtime.GOARCH, base, appLayer(t, "b")))
	dir := t.TempDir()
	s := images.New(images.Options{Dir: dir, Registry: registry.New(registry.Options{Insecure: []string{proxy.Host}}), Limit: limit})

	imgA, err := s.Pull(t.Context(), via(a, proxy.Host))
	if err != nil {
		t.Fatal(err)
	}
	first := proxy.BlobBytes()
	imgB, err := s.Pull(t.Context(), via(b, proxy.Host))
	if err != nil {
		t.Fatal(err)
	}
	second := proxy.BlobBytes() - first
	baseSize, _ := base.Size()
	if imgA.Layers[0] != imgB.Layers[0] || len(imgB.Layers) != 2 {
		t.Fatalf("layers %v and %v do not share a base", imgA.Layers, imgB.Layers)
	}
	if second >= baseSize {
		t.Fatalf("the second image transferred %d bytes, the shared base alone is %d", second, baseSize)
	}
	t.Logf("first image: %d blob bytes, second: %d (shared base %d)", first, second, baseSize)
	layers, _ := os.ReadDir(filepath.Join(dir, "layers", "sha256"))
	if len(layers) != 3 {
		t.Fatalf("%d layers unpacked, want 3", len(layers))
	}
	// A layer unpacked as it downloaded is kept unpacked only.
	for _, l := range append(imgA.Layers, imgB.Layers...) {
		if s.Blobs().Has(l) {
			t.Errorf("the compressed blob of layer %s is stored besides its unpacked copy", l)
		}
	}
	if dl, _ := s.Blobs().Downloads(); len(dl) != 0 {
		t.Errorf("downloads left: %+v", dl)
	}
	lowers := s.Lowers(imgB)
	if got, err := os.ReadFile(filepath.Join(lowers[0], "app/b")); err != nil || len(got) != 1000 {
		t.Fatalf("top layer of b: %d bytes, %v", len(got), err)
	}
	if _, err := os.Stat(filepath.Join(lowers[1], "bin/busybox")); err != nil {
		t.Fatalf("base layer of b: %v", err)
	}
	// Present now: a pull makes no request at all.
	gets := proxy.BlobGets()
	if _, err := s.Pull(t.Context(), via(b, proxy.Host)); err != nil {
		t.Fatal(err)
	}
	if after := proxy.BlobGets(); len(after) != len(gets) {
		t.Fatalf("a present image was fetched again: %v then %v", gets, after)
	}
}

// A zstd layer (application/vnd.oci.image.layer.v1.tar+zstd) over a gzip
// base is pulled, checked against its diff ID and unpacked.
func TestPullZstdLayer(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := registrytest.Start(t, registrytest.Options{})
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	body := strings.Repeat("zstd ", 1000)
	tw.WriteHeader(&tar.Header{Name: "app/z", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
	tw.Write([]byte(body))
	tw.Close()
	zl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw.Bytes())), nil },
		tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "zstd", registrytest.Image(t, runtime.GOARCH, registrytest.BusyboxLayer(t), zl))
	s := newStore(t, []string{reg.Host})
	img, err := s.Pull(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(s.Lowers(img)[0], "app/z")); err != nil || string(got) != body {
		t.Fatalf("app/z of the zstd layer: %d bytes, %v", len(got), err)
	}
}

func TestPullIndexPicksPlatform(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := registrytest.Start(t, registrytest.Options{})
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	mine := registrytest.Image(t, runtime.GOARCH, registrytest.BusyboxLayer(t), appLayer(t, "mine"))
	theirs := registrytest.Image(t, other, registrytest.BusyboxLayer(t), appLayer(t, "theirs"))
	ref := reg.PushIndex(t, "multi", registrytest.Index(t, map[string]v1.Image{runtime.GOARCH: mine, other: theirs}))
	s := newStore(t, []string{reg.Host})
	img, err := s.Pull(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := mine.Digest()
	if img.Manifest != want.Hex || img.Digest != ref.Digest {
		t.Fatalf("picked manifest %s, want %s", img.Manifest, want.Hex)
	}
	if _, err := os.Stat(filepath.Join(s.Lowers(img)[0], "app/mine")); err != nil {
		t.Fatal(err)
	}
	// An index without the node's platform.
	only := reg.PushIndex(t, "foreign", registrytest.Index(t, map[string]v1.Image{other: theirs}))
	if _, err := s.Pull(t.Context(), only); !errors.Is(err, images.ErrNoPlatform) {
		t.Fatalf("Pull of a foreign index = %v, want ErrNoPlatform", err)
	}
}

func TestPullRefuses(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := registrytest.Start(t, registrytest.Options{})
	authReg := registrytest.Start(t, registrytest.Options{User: "u", Password: "p"})
	img := registrytest.Image(t, runtime.GOARCH, appLayer(t, "x"))
	good := reg.Push(t, "good", img)
	locked := authReg.Push(t, "locked", img)
	// An artifact: a manifest whose config is not an image's.
	art := mutate.ConfigMediaType(registrytest.Image(t, runtime.GOARCH, appLayer(t, "y")), types.MediaType("application/vnd.example.thing.v1+json"))
	artifact := reg.Push(t, "artifact", art)
	// A blob whose bytes differ from its digest at the registry.
	bad := registrytest.Image(t, runtime.GOARCH, appLayer(t, "tampered"))
	tampered := reg.Push(t, "tampered", bad)
	ls, _ := bad.Layers()
	ld, _ := ls[0].Digest()
	reg.Tamper(t, ld.Hex)
	// A layer whose bytes are its digest's but not a tar.
	junk := reg.Push(t, "junk", registrytest.Image(t, runtime.GOARCH, static.NewLayer(bytes.Repeat([]byte("not a tar "), 1000), types.OCILayer)))
	down := good
	down.Registry = "127.0.0.1:1"
	missing := good
	missing.Digest = strings.Repeat("0", 64)

	tests := []struct {
		name     string
		ref      provision.ImageRef
		insecure []string
		err      error
		temp     bool
	}{
		{"registry-down", down, []string{down.Registry}, registry.ErrUnreachable, true},
		{"unauthorized", locked, []string{authReg.Host}, registry.ErrUnauthorized, false},
		{"not-found", missing, []string{reg.Host}, registry.ErrNotFound, false},
		{"artifact-media-type", artifact, []string{reg.Host}, registry.ErrMediaType, false},
		{"blob-digest-differs", tampered, []string{reg.Host}, content.ErrDigestMismatch, false},
		{"plain-http-not-listed", good, nil, registry.ErrPlainHTTP, false},
		{"not-a-tar", junk, []string{reg.Host}, images.ErrBadManifest, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := images.New(images.Options{Dir: dir, Registry: registry.New(registry.Options{Insecure: tc.insecure}), Limit: limit})
			_, err := s.Pull(t.Context(), tc.ref)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Pull = %v, want %v", err, tc.err)
			}
			if registry.Temporary(err) != tc.temp {
				t.Fatalf("Temporary(%v) = %v", err, !tc.temp)
			}
			if !strings.Contains(err.Error(), tc.ref.Registry) && !strings.Contains(err.Error(), tc.ref.Digest[:12]) {
				t.Fatalf("error %q names neither the registry nor the digest", err)
			}
			t.Logf("%s: %v", tc.name, err)
			assertClean(t, s, dir, tc.ref)
		})
	}
}

func TestPullTooLarge(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := registrytest.Start(t, registrytest.Options{})
	// Compresses to almost nothing, unpacks to 2 MiB.
	big := registrytest.Layer(t, []registrytest.File{{Name: "zeros", Body: make([]byte, 2<<20)}})
	ref := reg.Push(t, "big", registrytest.Image(t, runtime.GOARCH, big))
	dir := t.TempDir()
	s := images.New(images.Options{Dir: dir, Registry: registry.New(registry.Options{Insecure: []string{reg.Host}}), Limit: layer.Limit{Bytes: 1 << 20, Entries: 100}})
	if _, err := s.Pull(t.Context(), ref); !errors.Is(err, images.ErrTooLarge) {
		t.Fatalf("Pull = %v, want ErrTooLarge", err)
	}
	assertClean(t, s, dir, ref)
	// Compressed bytes count too.
	noise := make([]byte, 600<<10)
	for i := range noise {
		noise[i] = byte(i*7919 + i>>8*31)
	}
	two := reg.Push(t, "noisy", registrytest.Image(t, runtime.GOARCH,
		registrytest.Layer(t, []registrytest.File{{Name: "a", Body: noise}}),
		registrytest.Layer(t, []registrytest.File{{Name: "b", Body: bytes.ToUpper(noise)}})))
	if _, err := s.Pull(t.Context(), two); !errors.Is(err, images.ErrTooLarge) {
		t.Fatalf("Pull = %v, want ErrTooLarge", err)
	}
}

func TestPullOnceAndResume(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.StartProxy(t, reg.Host)
	ref := via(reg.Push(t, "busy", registrytest.Image(t, runtime.GOARCH, registrytest.BusyboxLayer(t))), proxy.Host)
	dir := t.TempDir()
	s := images.New(images.Options{Dir: dir, Registry: registry.New(registry.Options{Insecure: []string{proxy.Host}}), Limit: limit})

	// The first download breaks after 100 kB; the next pull resumes it.
	proxy.CutNext(100_000)
	_, err := s.Pull(t.Context(), ref)
	if err == nil {
		t.Fatal("a pull through a dropped connection succeeded")
	}
	if !registry.Temporary(err) && !strings.Contains(err.Error(), "downloading blob") {
		t.Logf("interrupted pull: %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Pull(t.Context(), ref) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ranges := proxy.Ranges()
	if len(ranges) == 0 || !strings.HasPrefix(ranges[0], "bytes=") || ranges[0] == "bytes=0-" {
		t.Fatalf("the download did not resume with a Range: %v", ranges)
	}
	for path, n := range proxy.BlobGets() {
		// The config once; the layer twice: the cut try and the resume.
		if n > 2 {
			t.Fatalf("%s fetched %d times by 4 concurrent pulls", path, n)
		}
	}
	t.Logf("ranges %v, gets %v", ranges, proxy.BlobGets())
}

func TestMirrorFirst(t *testing.T) {
	testutil.RequiresRoot(t)
	mirror := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.StartProxy(t, mirror.Host)
	// The image is only at the mirror; the registry the reference names is
	// down: the digest makes the mirror's copy as good.
	ref := mirror.Push(t, "team/app", registrytest.Image(t, runtime.GOARCH, appLayer(t, "m")))
	ref.Registry = "127.0.0.1:1"
	s := newStore(t, []string{proxy.Host, ref.Registry}, proxy.Host)
	if _, err := s.Pull(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	if proxy.BlobBytes() == 0 {
		t.Fatal("nothing came through the mirror")
	}
}

func TestSweep(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := registrytest.Start(t, registrytest.Options{})
	base := registrytest.BusyboxLayer(t)
	a := reg.Push(t, "a", registrytest.Image(t, runtime.GOARCH, base, appLayer(t, "a")))
	b := reg.Push(t, "b", registrytest.Image(t, runtime.GOARCH, base, appLayer(t, "b")))
	dir := t.TempDir()
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	s := images.New(images.Options{Dir: dir, Registry: registry.New(registry.Options{Insecure: []string{reg.Host}}), Limit: limit, Now: func() time.Time { return now }})
	imgA, err := s.Pull(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	imgB, err := s.Pull(t.Context(), b)
	if err != nil {
		t.Fatal(err)
	}
	keepA := func(d string) bool { return d == a.Digest }
	// Within the grace period nothing goes (blob times are the file
	// system's: older than now+grace).
	res, err := s.Sweep(t.Context(), keepA, nil, 24*time.Hour*365*100)
	if err != nil || len(res.Blobs)+len(res.Layers) != 0 {
		t.Fatalf("sweep within grace removed %+v, %v", res, err)
	}
	// A layer a container mounts stays although nothing references it.
	inUse := map[string]bool{imgB.Layers[1]: true}
	now = now.Add(48 * time.Hour)
	res, err = s.Sweep(t.Context(), keepA, inUse, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	// b's manifest and config go (its layers' blobs were not kept); its
	// mounted layer stays.
	if len(res.Blobs) != 2 || len(res.Layers) != 0 {
		t.Fatalf("sweep removed %+v; want b's manifest and config", res)
	}
	for _, d := range []string{a.Digest, imgA.Config} {
		if !s.Blobs().Has(d) {
			t.Fatalf("blob %s of the kept image was removed", d)
		}
	}
	if _, err := os.Stat(s.LayerDir(imgB.Layers[1])); err != nil {
		t.Fatalf("a mounted layer was removed: %v", err)
	}
	res, err = s.Sweep(t.Context(), keepA, nil, time.Nanosecond)
	if err != nil || len(res.Layers) != 1 || res.Layers[0] != imgB.Layers[1] {
		t.Fatalf("second sweep = %+v, %v; want b's own layer", res, err)
	}
	// The shared base stays with a; a pinned (imported) image stays with
	// nothing referencing it.
	if err := s.Pin(a.Digest); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Sweep(t.Context(), func(string) bool { return false }, nil, time.Nanosecond); err != nil || len(res.Blobs)+len(res.Layers) != 0 {
		t.Fatalf("sweep removed a pinned image: %+v, %v", res, err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Digest != a.Digest || !list[0].Imported || list[0].Layers != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if err := s.Unpin(a.Digest); err != nil {
		t.Fatal(err)
	}
	res, err = s.Sweep(t.Context(), func(string) bool { return false }, nil, time.Nanosecond)
	if err != nil || len(res.Blobs) != 2 || len(res.Layers) != 2 {
		t.Fatalf("sweep of nothing kept = %+v, %v", res, err)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("images left: %+v", list)
	}
}
