package volume_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/internal/mounts"
	"github.com/edgeprov/provisiond/primitives/volume"
	"github.com/edgeprov/provisiond/provision"
)

const mib = 1 << 20

func randID(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + "-" + hex.EncodeToString(b)
}

type env struct {
	dir string
	m   *volume.Manager
}

func newEnv(t testing.TB) *env {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "mkfs.ext4")
	dir := t.TempDir()
	e := &env{dir: dir, m: volume.New(volume.Options{DataDir: dir, Log: zerolog.Nop()})}
	t.Cleanup(func() { assertNoLeaks(t, dir) })
	return e
}

// cleanup decommissions id at the end of the test.
func (e *env) cleanup(t testing.TB, id string) {
	t.Helper()
	t.Cleanup(func() {
		if err := e.m.Decommission(context.Background(), id); err != nil {
			t.Errorf("Decommission %s: %v", id, err)
		}
	})
}

// eventually polls check until it returns nil or the deadline passes.
func eventually(t testing.TB, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertNoLeaks checks that no mount and no loop device refers to dir.
func assertNoLeaks(t testing.TB, dir string) {
	t.Helper()
	eventually(t, 5*time.Second, func() error {
		ms, err := mounts.List()
		if err != nil {
			return err
		}
		for _, m := range ms {
			if strings.HasPrefix(m.Point, dir) {
				return fmt.Errorf("mount left at %s", m.Point)
			}
		}
		files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if strings.HasPrefix(string(b), dir) {
				return fmt.Errorf("loop device %s left for %s", f, bytes.TrimSpace(b))
			}
		}
		return nil
	})
}

func writeN(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := bytes.Repeat([]byte{0xa5}, mib)
	for i := 0; i < n; i++ {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func TestSizeEnforcedAndDataSurvivesRemount(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	id := randID(t, "vol")
	e.cleanup(t, id)
	info, err := e.m.Provision(ctx, id, provision.SSD, 64*mib)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if info.ID != id || info.Path != filepath.Join(e.dir, "mounts", "prv-"+id) {
		t.Fatalf("info = %+v", info)
	}
	img := filepath.Join(e.dir, "volumes", "ssd", "prv-"+id+".img")
	st, err := os.Stat(img)
	if err != nil || st.Size() != 64*mib {
		t.Fatalf("image %s: %v, size %d, want %d", img, err, st.Size(), 64*mib)
	}
	// Allocated, not sparse: the volume's space is taken when it is made.
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used < 64*mib {
		t.Fatalf("image is sparse: %d bytes allocated, want %d", used, 64*mib)
	}

	err = writeN(filepath.Join(info.Path, "big"), 65)
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing 65 MiB to a 64 MiB volume = %v, want ENOSPC", err)
	}
	if err := os.Remove(filepath.Join(info.Path, "big")); err != nil {
		t.Fatal(err)
	}
	// Still allocated after use: nothing punched holes into it.
	if err := syscall.Stat(img, st.Sys().(*syscall.Stat_t)); err != nil {
		t.Fatal(err)
	} else if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used < 64*mib {
		t.Fatalf("image became sparse: %d bytes allocated, want %d", used, 64*mib)
	}
	want := []byte("survives a restart")
	if err := os.WriteFile(filepath.Join(info.Path, "keep"), want, 0o644); err != nil {
		t.Fatal(err)
	}

	// Reboot: the mount is gone, a new Manager mounts the image again.
	if err := unix.Unmount(info.Path, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Inspect(ctx, id); !errors.Is(err, provision.ErrVanished) {
		t.Fatalf("Inspect of an unmounted volume = %v, want ErrVanished", err)
	}
	restarted := volume.New(volume.Options{DataDir: e.dir})
	p, err := restarted.Mount(ctx, id)
	if err != nil {
		t.Fatalf("Mount after restart: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(p, "keep"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after remount: %q, %v", got, err)
	}
	if err := restarted.Inspect(ctx, id); err != nil {
		t.Fatalf("Inspect: %v", err)
	}
}

// TestRemountReusesAttachedLoop is a daemon restart after which the
// volume's mount is gone from the daemon's mount namespace while a
// container (here a process in a mount namespace of its own) still holds
// it: Mount must mount the loop device the container writes through, not
// attach the image a second time.
func TestRemountReusesAttachedLoop(t *testing.T) {
	e := newEnv(t)
	testutil.RequiresCommand(t, "unshare")
	ctx := t.Context()
	id := randID(t, "reuse")
	e.cleanup(t, id)
	info, err := e.m.Provision(ctx, id, provision.SSD, 64*mib)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	img := filepath.Join(e.dir, "volumes", "ssd", "prv-"+id+".img")
	before := loops(t, img)
	if len(before) != 1 {
		t.Fatalf("loop devices of a new volume: %v, want one", before)
	}
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "3600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	// The holder's copy of the mount is in place once its namespace differs.
	eventually(t, 5*time.Second, func() error {
		own, _ := os.Readlink("/proc/self/ns/mnt")
		its, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", holder.Process.Pid))
		if err != nil || its == own {
			return fmt.Errorf("holder's mount namespace %q (ours %q): %v", its, own, err)
		}
		return nil
	})
	if err := unix.Unmount(info.Path, 0); err != nil {
		t.Fatal(err)
	}
	if got := loops(t, img); !slices.Equal(got, before) {
		t.Fatalf("loop devices while the holder keeps the mount: %v, want %v", got, before)
	}
	restarted := volume.New(volume.Options{DataDir: e.dir})
	p, err := restarted.Mount(ctx, id)
	if err != nil {
		t.Fatalf("Mount after restart: %v", err)
	}
	if got := loops(t, img); !slices.Equal(got, before) {
		t.Fatalf("loop devices after the remount: %v, want only %v (the image attached once)", got, before)
	}
	// One filesystem: what the holder writes is seen through the new mount.
	theirs := filepath.Join(fmt.Sprintf("/proc/%d/root", holder.Process.Pid), info.Path, "from-holder")
	if err := os.WriteFile(theirs, []byte("one image, one device"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(p, "from-holder")); err != nil || string(b) != "one image, one device" {
		t.Fatalf("new mount reads %q, %v", b, err)
	}
	_ = holder.Process.Kill()
	_ = holder.Wait()
}

// TestDecommissionLeavesForeignLoop: loop devices are the machine's, and
// the path the kernel shows for a backing file is the path in the mount
// namespace that bound it. A loop another namespace (the host, or another
// node's container) bound to a file at our image's path must survive our
// Decommission.
func TestDecommissionLeavesForeignLoop(t *testing.T) {
	e := newEnv(t)
	testutil.RequiresCommand(t, "unshare")
	ctx := t.Context()
	id := randID(t, "foreign")
	e.cleanup(t, id)
	if _, err := e.m.Provision(ctx, id, provision.SSD, 64*mib); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	img := filepath.Join(e.dir, "volumes", "ssd", "prv-"+id+".img")
	tmp := t.TempDir()
	other, devFile := filepath.Join(tmp, "other.img"), filepath.Join(tmp, "dev")
	if err := os.WriteFile(other, make([]byte, mib), 0o600); err != nil {
		t.Fatal(err)
	}
	// Another mount namespace, kept alive by a process as a container
	// would, binds its own file at our image's path and attaches it there.
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		fmt.Sprintf("mount --bind %s %s && losetup --find --show %s > %s.tmp && mv %s.tmp %s && exec sleep 3600", other, img, img, devFile, devFile, devFile))
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	var dev string
	eventually(t, 5*time.Second, func() error {
		b, err := os.ReadFile(devFile)
		dev = strings.TrimSpace(string(b))
		return err
	})
	t.Cleanup(func() { _, _ = execOut("losetup", "-d", dev) })
	backing := func() string {
		b, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
		return strings.TrimSpace(string(b))
	}
	if got := backing(); got != img {
		t.Fatalf("the foreign loop %s shows backing file %q, want our path %s", dev, got, img)
	}
	if err := e.m.Decommission(ctx, id); err != nil {
		t.Fatalf("Decommission: %v", err)
	}
	// (The unlinked image takes the other namespace's bind mount on it
	// along, so the loop's path reads "/" now; it must still be bound.)
	if _, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")); err != nil {
		t.Fatalf("Decommission detached the foreign loop %s: %v", dev, err)
	}
}

// loops returns the loop devices bound to img, as losetup -j lists them.
func loops(t testing.TB, img string) []string {
	t.Helper()
	out, err := execOut("losetup", "-n", "-O", "NAME", "-j", img)
	if err != nil {
		t.Fatalf("losetup -j %s: %v: %s", img, err, out)
	}
	devs := strings.Fields(out)
	slices.Sort(devs)
	return devs
}

func TestIdempotent(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	id := randID(t, "idem")
	e.cleanup(t, id)
	for i := range 2 {
		if _, err := e.m.Provision(ctx, id, provision.HDD, 8*mib); err != nil {
			t.Fatalf("Provision #%d: %v", i+1, err)
		}
	}
	n := 0
	ms, _ := mounts.List()
	for _, m := range ms {
		if m.Point == e.m.Path(id) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("volume mounted %d times, want once", n)
	}
	for i := range 2 {
		if err := e.m.Decommission(ctx, id); err != nil {
			t.Fatalf("Decommission #%d: %v", i+1, err)
		}
	}
	ids, err := e.m.List(ctx)
	if err != nil || len(ids) != 0 {
		t.Fatalf("List after decommission = %v, %v", ids, err)
	}
	if err := e.m.Inspect(ctx, id); !errors.Is(err, provision.ErrVanished) {
		t.Fatalf("Inspect after decommission = %v", err)
	}
	if _, err := e.m.Mount(ctx, id); !errors.Is(err, volume.ErrNotFound) || !provision.IsTemporary(err) {
		t.Fatalf("Mount of an absent volume = %v, want temporary ErrNotFound", err)
	}
}

func TestRefuses(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	id := randID(t, "ref")
	e.cleanup(t, id)
	if _, err := e.m.Provision(ctx, id, provision.SSD, 8*mib); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		id   string
		kind provision.DiskType
		size int64
		want error
	}{
		{"shrink", id, provision.SSD, 4 * mib, volume.ErrSizeMismatch},
		{"other-type", id, provision.HDD, 8 * mib, volume.ErrTypeMismatch},
		{"zero-size", "z", provision.SSD, 0, volume.ErrBadSize},
		{"unaligned-size", "z", provision.SSD, 4097, volume.ErrBadSize},
		{"bad-type", "z", "nvme", mib, volume.ErrBadType},
		{"path-in-id", "../x", provision.SSD, mib, volume.ErrBadID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.Provision(ctx, tc.id, tc.kind, tc.size)
			if !errors.Is(err, tc.want) || provision.IsTemporary(err) {
				t.Fatalf("Provision = %v, want permanent %v", err, tc.want)
			}
		})
	}
}

func TestHalfDone(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	ssd := filepath.Join(e.dir, "volumes", "ssd")

	t.Run("temporary-image-left", func(t *testing.T) {
		id := randID(t, "tmp")
		e.cleanup(t, id)
		if err := os.MkdirAll(ssd, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ssd, "prv-"+id+".img.tmp"), []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		ids, err := e.m.List(ctx)
		if err != nil || !slices.Contains(ids, id) {
			t.Fatalf("List = %v, %v; want the half-made %s", ids, err, id)
		}
		if _, err := e.m.Provision(ctx, id, provision.SSD, 8*mib); err != nil {
			t.Fatalf("Provision after a crash in mkfs: %v", err)
		}
		if _, err := os.Stat(filepath.Join(ssd, "prv-"+id+".img.tmp")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("temporary image still there: %v", err)
		}
	})

	t.Run("loop-attached-not-mounted", func(t *testing.T) {
		id := randID(t, "loop")
		e.cleanup(t, id)
		if _, err := e.m.Provision(ctx, id, provision.SSD, 8*mib); err != nil {
			t.Fatal(err)
		}
		if err := unix.Unmount(e.m.Path(id), 0); err != nil {
			t.Fatal(err)
		}
		// A loop device attached by hand (no autoclear) to the image.
		img := filepath.Join(ssd, "prv-"+id+".img")
		if out, err := execOut("losetup", "-f", img); err != nil {
			t.Fatalf("losetup: %v %s", err, out)
		}
		if err := e.m.Decommission(ctx, id); err != nil {
			t.Fatalf("Decommission: %v", err)
		}
	})

	t.Run("image-without-mount-is-mounted", func(t *testing.T) {
		id := randID(t, "remount")
		e.cleanup(t, id)
		if _, err := e.m.Provision(ctx, id, provision.SSD, 8*mib); err != nil {
			t.Fatal(err)
		}
		if err := unix.Unmount(e.m.Path(id), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := e.m.Provision(ctx, id, provision.SSD, 8*mib); err != nil {
			t.Fatal(err)
		}
		if err := e.m.Inspect(ctx, id); err != nil {
			t.Fatalf("Inspect: %v", err)
		}
	})
}

func TestListOnlyPrefix(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	id := randID(t, "mine")
	e.cleanup(t, id)
	if _, err := e.m.Provision(ctx, id, provision.SSD, 8*mib); err != nil {
		t.Fatal(err)
	}
	foreign := []string{
		filepath.Join(e.dir, "volumes", "ssd", "foreign.img"),
		filepath.Join(e.dir, "volumes", "hdd", "data.img"),
		filepath.Join(e.dir, "mounts", "foreign", "file"),
	}
	for _, f := range foreign {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("not ours"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ids, err := e.m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{id}) {
		t.Fatalf("List = %v, want [%s]", ids, id)
	}
	if err := e.m.Decommission(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, f := range foreign {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("foreign file touched: %v", err)
		}
	}
}

func BenchmarkProvision(b *testing.B) {
	e := newEnv(b)
	ctx := b.Context()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("bench-%d", i)
		if _, err := e.m.Provision(ctx, id, provision.SSD, 64*mib); err != nil {
			b.Fatal(err)
		}
		if err := e.m.Decommission(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
