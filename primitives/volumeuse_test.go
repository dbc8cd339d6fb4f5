package primitives_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives"
	"github.com/edgeprov/provisiond/provision"
)

// TestVolumeInUseWaits refuses, for now (a temporary error the engine
// retries), to delete a volume a container mounts, an orphan one too,
// leaving the container's data whole; once the container is gone the
// delete completes.
func TestVolumeInUseWaits(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	alice := testutil.RandHex(t, 32)
	vol := e.reservation(t, alice, provision.VolumeReservation, &provision.Volume{Size: 1, Type: provision.SSD})
	ctr := e.reservation(t, alice, provision.ContainerReservation, e.container("", "", provision.Mount{VolumeID: vol.ID, Mountpoint: "/data"}))
	t.Cleanup(func() {
		e.p.Decommission(context.Background(), ctr)
		e.p.Decommission(context.Background(), vol)
	})
	if _, err := e.p.Provision(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.Provision(ctx, ctr); err != nil {
		t.Fatal(err)
	}
	if out, err := e.exec(ctr.ID, "sh", "-c", "echo kept > /data/f"); err != nil {
		t.Fatalf("writing into the volume: %v %s", err, out)
	}

	for name, del := range map[string]func() error{
		"decommission": func() error { return e.p.Decommission(ctx, vol) },
		"orphan-removal": func() error {
			return e.p.Remove(ctx, provision.Resource{Type: provision.VolumeReservation, ID: vol.ID, Name: provision.Prefix + vol.ID})
		},
	} {
		err := del()
		if !errors.Is(err, primitives.ErrVolumeInUse) || !provision.IsTemporary(err) || !strings.Contains(err.Error(), ctr.ID) {
			t.Fatalf("%s of a mounted volume = %v, want a temporary ErrVolumeInUse naming %s", name, err, ctr.ID)
		}
		if err := e.p.Inspect(ctx, vol); err != nil {
			t.Fatalf("after the refused %s the volume is %v", name, err)
		}
		if out, err := e.exec(ctr.ID, "cat", "/data/f"); err != nil || strings.TrimSpace(out) != "kept" {
			t.Fatalf("after the refused %s the container reads %q, %v", name, out, err)
		}
	}

	if err := e.p.Decommission(ctx, ctr); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Decommission(ctx, vol); err != nil {
		t.Fatalf("Decommission once the container is gone: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "volumes", "ssd", provision.Prefix+vol.ID+".img")); !os.IsNotExist(err) {
		t.Fatalf("volume image still there: %v", err)
	}
}
