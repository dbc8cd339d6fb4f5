package container_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/container"
)

// otherImage writes, beside e's image, the same rootfs with another
// digest (two more zero blocks after the tar's end) and returns its path
// and digest.
func otherImage(t testing.TB, e *env) (string, string) {
	t.Helper()
	b, err := os.ReadFile(e.image)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, make([]byte, 1024)...)
	p := filepath.Join(filepath.Dir(e.image), "other-rootfs.tar")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

func none() (map[string]bool, error) { return map[string]bool{}, nil }

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestSweepImages removes the images no record references and no running
// container uses, and what an interrupted unpack or removal left, and
// keeps the rest.
func TestSweepImages(t *testing.T) {
	e := newEnv(t, container.Options{})
	ctx := t.Context()
	otherPath, other := otherImage(t, e)

	a := "gc-a-" + testutil.RandHex(t, 3)
	e.run(t, a, e.spec("sleep", "3600"))
	b := "gc-b-" + testutil.RandHex(t, 3)
	sb := e.spec("sleep", "3600")
	sb.Image, sb.Digest = otherPath, other
	if _, err := e.m.Provision(ctx, b, sb); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Decommission(ctx, b); err != nil { // its record is gone; its image stays
		t.Fatal(err)
	}
	images, _, _, _ := e.m.Dirs()
	// What a kill -9 leaves: an unpack's and a removal's directories.
	for _, d := range []string{".tmp-0123456789ab-42", ".gc-" + other + "-7"} {
		if err := os.MkdirAll(filepath.Join(images, d, "bin"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(images, d, "bin", "x"), make([]byte, 64<<10), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// No record references anything: the running container's image stays
	// (its overlay uses it), the other goes.
	res, err := e.m.SweepImages(ctx, none)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Images, []string{other}) || res.Temporary != 2 || res.Bytes <= 128<<10 {
		t.Fatalf("SweepImages = %+v, want %s removed, 2 temporary, > 128 KiB", res, other)
	}
	if !exists(e.m.ImageDir(e.digest)) || exists(e.m.ImageDir(other)) {
		t.Fatalf("after the sweep: image in use present %t, unused present %t", exists(e.m.ImageDir(e.digest)), exists(e.m.ImageDir(other)))
	}
	entries, _ := os.ReadDir(images)
	if len(entries) != 1 {
		t.Fatalf("images/ holds %d entries, want 1", len(entries))
	}
	if out, err := e.exec(t, a, "true"); err != nil {
		t.Fatalf("the running container broke: %v %s", err, out)
	}

	// Once the container is gone, its record's reference alone keeps it.
	if err := e.m.Decommission(ctx, a); err != nil {
		t.Fatal(err)
	}
	if res, err := e.m.SweepImages(ctx, func() (map[string]bool, error) { return map[string]bool{e.digest: true}, nil }); err != nil || len(res.Images) != 0 {
		t.Fatalf("SweepImages with a reference = %+v, %v; want nothing removed", res, err)
	}
	// A store that cannot answer removes nothing.
	if _, err := e.m.SweepImages(ctx, func() (map[string]bool, error) { return nil, errors.New("store down") }); err == nil || !exists(e.m.ImageDir(e.digest)) {
		t.Fatalf("SweepImages with a failing store = %v; image present %t", err, exists(e.m.ImageDir(e.digest)))
	}
	if res, err := e.m.SweepImages(ctx, none); err != nil || !slices.Equal(res.Images, []string{e.digest}) {
		t.Fatalf("SweepImages = %+v, %v; want %s removed", res, err, e.digest)
	}
}

// TestSweepRacesReservation runs sweeps that know of no record (as if the
// store was read just before a new reservation was stored) while
// containers of the same image are provisioned: every container must come
// up on a whole image, which a sweep never deletes under it.
func TestSweepRacesReservation(t *testing.T) {
	e := newEnv(t, container.Options{})
	ctx := t.Context()
	sweeps, removed := 0, 0
	for i := range 6 {
		id := "gc-race-" + testutil.RandHex(t, 3)
		t.Cleanup(func() { e.m.Decommission(context.Background(), id) })
		stop, first := make(chan struct{}), make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for n := 0; ; n++ {
				if n == 1 {
					close(first)
				}
				select {
				case <-stop:
					return
				default:
				}
				res, err := e.m.SweepImages(ctx, none)
				if err != nil {
					t.Errorf("SweepImages: %v", err)
					if n == 0 {
						close(first)
					}
					return
				}
				sweeps++
				removed += len(res.Images)
			}
		})
		if i%2 == 1 {
			// The image unused since the last round is removed first,
			// then provisioned again, while the sweeps go on.
			<-first
		}
		_, err := e.m.Provision(ctx, id, e.spec("sleep", "3600"))
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: Provision: %v", i, err)
		}
		if out, err := e.exec(t, id, "ls", "/bin/busybox"); err != nil {
			t.Fatalf("round %d: the container runs on a broken image: %v %s", i, err, out)
		}
		if !exists(filepath.Join(e.m.ImageDir(e.digest), "bin", "busybox")) {
			t.Fatalf("round %d: the image a running container uses was removed", i)
		}
		if err := e.m.Decommission(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d sweeps, %d images removed between provisions", sweeps, removed)
	if removed == 0 {
		t.Errorf("no sweep removed the unused image between rounds: the race was not exercised")
	}
}
