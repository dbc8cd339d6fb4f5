package volume_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/primitives/volume"
	"github.com/edgeprov/provisiond/provision"
)

// fsSize returns the size of the filesystem mounted at p and the bytes
// allocated to the image file img.
func fsSize(t testing.TB, p, img string) (fs, allocated int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	var fst unix.Stat_t
	if err := unix.Stat(img, &fst); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize, fst.Blocks * 512
}

// A larger version of a mounted volume grows it online: the image is
// allocated to the new size and the filesystem fills it, the data stays;
// a grow cut short by a crash (image grown, filesystem not) is finished
// by the next Provision.
func TestGrow(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	id := randID(t, "grow")
	e.cleanup(t, id)
	info, err := e.m.Provision(ctx, id, provision.SSD, 16*mib)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(info.Path, "data"), []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(e.dir, "volumes", "ssd", volume.Name(id)+".img")
	before, _ := fsSize(t, info.Path, img)

	if _, err := e.m.Provision(ctx, id, provision.SSD, 64*mib); err != nil {
		t.Fatal(err)
	}
	after, allocated := fsSize(t, info.Path, img)
	if after < before+40*mib || after > 64*mib || allocated < 64*mib {
		t.Fatalf("after the grow: filesystem %d bytes (was %d), image allocated %d; want about 64 MiB", after, before, allocated)
	}
	if b, err := os.ReadFile(filepath.Join(info.Path, "data")); err != nil || string(b) != "kept" {
		t.Fatalf("data after the grow: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "volumes", "ssd", volume.Name(id)+".img.grow")); !os.IsNotExist(err) {
		t.Fatalf("grow marker left: %v", err)
	}
	// Repeating the version changes nothing.
	if _, err := e.m.Provision(ctx, id, provision.SSD, 64*mib); err != nil {
		t.Fatal(err)
	}

	// A crash after the image grew, before the filesystem did.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 96*mib); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(e.dir, "volumes", "ssd", volume.Name(id)+".img.grow"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Provision(ctx, id, provision.SSD, 96*mib); err != nil {
		t.Fatal(err)
	}
	if got, _ := fsSize(t, info.Path, img); got < after+24*mib {
		t.Fatalf("after the resumed grow: filesystem %d bytes, want about 96 MiB", got)
	}
	if _, err := e.m.Provision(ctx, id, provision.SSD, 32*mib); err == nil {
		t.Fatal("a shrink was accepted")
	}
}

// Without CAP_SYS_RESOURCE, a volume mounted elsewhere too (a container
// uses it) cannot grow: a permanent ErrBusy, the image unchanged, and the
// current size provisions again (the engine's rollback).
func TestGrowInUseWithoutCapability(t *testing.T) {
	if capSysResource() {
		t.Skip("skipping: the daemon has CAP_SYS_RESOURCE here and grows online")
	}
	e := newEnv(t)
	ctx := t.Context()
	id := randID(t, "busy")
	e.cleanup(t, id)
	info, err := e.m.Provision(ctx, id, provision.SSD, 16*mib)
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if err := unix.Mount(info.Path, other, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(other, 0)
	_, err = e.m.Provision(ctx, id, provision.SSD, 64*mib)
	if !errors.Is(err, volume.ErrBusy) || provision.IsTemporary(err) {
		t.Fatalf("grow of a volume in use: %v, want permanent ErrBusy", err)
	}
	img := filepath.Join(e.dir, "volumes", "ssd", volume.Name(id)+".img")
	if st, err := os.Stat(img); err != nil || st.Size() != 16*mib {
		t.Fatalf("the image changed: %v", err)
	}
	if _, err := e.m.Provision(ctx, id, provision.SSD, 16*mib); err != nil {
		t.Fatalf("the current size after the refused grow: %v", err)
	}
	if err := unix.Unmount(other, 0); err != nil {
		t.Fatal(err)
	}
}

func capSysResource() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0
}
