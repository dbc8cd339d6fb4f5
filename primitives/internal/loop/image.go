package loop

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MakeExt4 writes an allocated (not sparse) ext4 image of size bytes at tmp
// with the mkfs.ext4 at mkfs, then renames it to img and syncs it and its
// directory, so a crash never leaves a half-made image under img. The
// space is taken now: a full disk answers ENOSPC here, not to a tenant's
// write later. tmp is removed on failure.
func MakeExt4(ctx context.Context, mkfs, tmp, img string, size int64) error {
	if err := makeExt4(ctx, mkfs, tmp, img, size); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncFile(filepath.Dir(img))
}

func makeExt4(ctx context.Context, mkfs, tmp, img string, size int64) error {
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("allocating %d MiB: %w", size>>20, err)
	}
	// No reserved blocks (the whole image is the tenant's), no discard
	// (which would punch the allocated file sparse again), inode tables
	// written now (a kernel thread writing them later would punch holes).
	cmd := exec.CommandContext(ctx, mkfs, "-F", "-q", "-m", "0",
		"-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=1", tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// mke2fs zeroes the inode tables by punching holes: allocate them again.
	if err := reallocate(tmp, size); err != nil {
		return err
	}
	if err := SyncFile(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, img)
}

// reallocate allocates whatever of the first size bytes of file p is a
// hole, keeping its data.
func reallocate(p string, size int64) error {
	f, err := os.OpenFile(p, os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("allocating: %w", err)
	}
	return nil
}

// SyncFile fsyncs the file or directory p.
func SyncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
