package container_test

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgeprov/provisiond/internal/registrytest"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/provision"
)

// refSpec returns a spec running args in the registry image ref.
func refSpec(ref provision.ImageRef, args ...string) container.Spec {
	return container.Spec{Image: ref.String(), Digest: ref.Digest, Args: args, CPU: 1, Memory: 64}
}

// TestRunFromRegistry runs containers from images pushed to a real
// registry: two sharing a busybox base, one whose upper layer deletes and
// replaces files of the base (a whiteout and an opaque directory) and
// keeps a setuid bit, and one from a multi-platform index.
func TestRunFromRegistry(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := registrytest.Start(t, registrytest.Options{})
	// No grace period: only references, leases and mounts keep content.
	e := newEnv(t, container.Options{InsecureRegistries: []string{reg.Host}, ImageGrace: time.Nanosecond})
	base := registrytest.BusyboxLayer(t)
	app := registrytest.Layer(t, []registrytest.File{
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "etc/.wh.passwd"}, // deletes the base's /etc/passwd
		{Name: "bin/", Type: tar.TypeDir},
		{Name: "bin/.wh..wh..opq"}, // hides the base's applets...
		{Name: "bin/busybox", Type: tar.TypeSymlink, Link: "/sbin/busybox"},
		{Name: "sbin/", Type: tar.TypeDir},
		{Name: "srv/", Type: tar.TypeDir},
		{Name: "srv/suid", Body: []byte("x"), Mode: 0o4755},
		{Name: "srv/hello", Body: []byte("hello from a layer\n")},
	})
	// The opaque /bin keeps only what the top layer puts there: a symlink
	// to /sbin/busybox, which a layer in between brings.
	mid := registrytest.Layer(t, []registrytest.File{
		{Name: "sbin/", Type: tar.TypeDir},
		{Name: "sbin/busybox", Body: busyboxBytes(t), Mode: 0o755},
	})
	other := registrytest.Layer(t, []registrytest.File{{Name: "srv/", Type: tar.TypeDir}, {Name: "srv/other", Body: []byte("other\n")}})
	whiteouts := reg.Push(t, "whiteouts", registrytest.Image(t, runtime.GOARCH, base, mid, app))
	second := reg.Push(t, "second", registrytest.Image(t, runtime.GOARCH, base, other))
	foreign := "arm64"
	if runtime.GOARCH == foreign {
		foreign = "amd64"
	}
	multi := reg.PushIndex(t, "multi", registrytest.Index(t, map[string]v1.Image{
		runtime.GOARCH: registrytest.Image(t, runtime.GOARCH, base, other),
		foreign:        registrytest.Image(t, foreign, registrytest.Layer(t, []registrytest.File{{Name: "not-mine", Body: []byte("x")}})),
	}))

	e.run(t, "reg-whiteouts", refSpec(whiteouts, "/bin/busybox", "sleep", "600"))
	e.run(t, "reg-second", refSpec(second, "/bin/sleep", "600"))
	e.run(t, "reg-multi", refSpec(multi, "/bin/sleep", "600"))

	out, err := e.exec(t, "reg-whiteouts", "/bin/busybox", "cat", "/srv/hello")
	if err != nil || out != "hello from a layer\n" {
		t.Fatalf("cat /srv/hello = %q, %v", out, err)
	}
	if out, err := e.exec(t, "reg-whiteouts", "/bin/busybox", "ls", "/bin"); err != nil || strings.TrimSpace(out) != "busybox" {
		t.Fatalf("ls /bin = %q, %v; want only busybox (the directory is opaque)", out, err)
	}
	if _, err := e.exec(t, "reg-whiteouts", "/bin/busybox", "test", "-e", "/etc/passwd"); err == nil {
		t.Fatal("/etc/passwd, whited out, is visible")
	}
	if out, err := e.exec(t, "reg-whiteouts", "/bin/busybox", "stat", "-c", "%A %u", "/srv/suid"); err != nil || strings.TrimSpace(out) != "-rwsr-xr-x 0" {
		t.Fatalf("stat /srv/suid = %q, %v; want setuid, owned by the container's root", out, err)
	}
	if out, err := e.exec(t, "reg-second", "/bin/cat", "/srv/other", "/etc/passwd"); err != nil || !strings.HasPrefix(out, "other\nroot:") {
		t.Fatalf("second image: %q, %v", out, err)
	}
	if _, err := e.exec(t, "reg-multi", "/bin/test", "-e", "/not-mine"); err == nil {
		t.Fatal("the foreign platform's layer was used")
	}
	// The base layer was unpacked once for the three images: 1 + 2 + 1
	// (mid, app; other) layers.
	layers, err := os.ReadDir(filepath.Join(e.dir, "layers", "sha256"))
	if err != nil || len(layers) != 4 {
		t.Fatalf("%d unpacked layers, want 4 (the base shared): %v", len(layers), err)
	}
	// A write in a container goes to its own disk, not the shared layer.
	if _, err := e.exec(t, "reg-second", "/bin/sh", "-c", "echo changed > /srv/other"); err != nil {
		t.Fatal(err)
	}
	if out, _ := e.exec(t, "reg-multi", "/bin/cat", "/srv/other"); out != "other\n" {
		t.Fatalf("another container sees %q after a write in the first", out)
	}

	// The garbage collector: only whiteouts is referenced. The others'
	// manifests and blobs go; every layer is mounted and stays.
	keepOnly := func(d string) func() (map[string]bool, error) {
		return func() (map[string]bool, error) { return map[string]bool{d: true}, nil }
	}
	res, err := e.m.SweepImages(t.Context(), keepOnly(whiteouts.Digest))
	if err != nil || len(res.Layers) != 0 || len(res.Blobs) == 0 {
		t.Fatalf("sweep with containers running = %+v, %v; want blobs removed and no layer", res, err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "blobs", "sha256", whiteouts.Digest)); err != nil {
		t.Fatalf("the referenced image's manifest was removed: %v", err)
	}
	if out, err := e.exec(t, "reg-multi", "/bin/cat", "/srv/other"); err != nil || out != "other\n" {
		t.Fatalf("after the sweep: %q, %v", out, err)
	}
	// Once its containers are gone, the layer only they used goes; the
	// shared base stays with whiteouts.
	for _, id := range []string{"reg-second", "reg-multi"} {
		if err := e.m.Decommission(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	res, err = e.m.SweepImages(t.Context(), keepOnly(whiteouts.Digest))
	if err != nil || len(res.Layers) != 1 {
		t.Fatalf("sweep after decommission = %+v, %v; want the one layer of second", res, err)
	}
	if layers, _ := os.ReadDir(filepath.Join(e.dir, "layers", "sha256")); len(layers) != 3 {
		t.Fatalf("%d layers left, want whiteouts' 3", len(layers))
	}
}

func busyboxBytes(t testing.TB) []byte {
	t.Helper()
	p := testutil.RequiresCommand(t, "busybox")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRegistryRefuses checks that a registry image that cannot be pulled
// fails Provision with the error its kind calls for and leaves nothing.
func TestRegistryRefuses(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := registrytest.Start(t, registrytest.Options{})
	good := reg.Push(t, "good", registrytest.Image(t, runtime.GOARCH, registrytest.Layer(t, []registrytest.File{{Name: "a", Body: []byte("a")}})))
	down := good
	down.Registry = "127.0.0.1:1"
	missing := good
	missing.Digest = strings.Repeat("1", 64)
	e := newEnv(t, container.Options{InsecureRegistries: []string{reg.Host, down.Registry}})
	tests := []struct {
		name      string
		ref       provision.ImageRef
		err       error
		permanent bool
	}{
		{"down", down, nil, false},
		{"not-found", missing, container.ErrImageNotFound, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.Provision(t.Context(), "reg-refused", refSpec(tc.ref, "/bin/sh"))
			if err == nil {
				t.Fatal("Provision succeeded")
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("Provision = %v, want %v", err, tc.err)
			}
			if got := !provision.IsTemporary(err); got != tc.permanent {
				t.Fatalf("permanent(%v) = %v", err, got)
			}
			if !strings.Contains(err.Error(), tc.ref.String()) {
				t.Fatalf("%q does not name the image", err)
			}
			if _, err := os.Stat(e.m.Bundle("reg-refused")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a bundle was made: %v", err)
			}
		})
	}
}
