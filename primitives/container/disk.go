package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/primitives/internal/loop"
	"github.com/edgeprov/provisiond/primitives/internal/mounts"
)

// A container's disk. The overlay's upper and work directories, all a
// container can write besides its volumes and its small tmpfs mounts, live
// on an ext4 filesystem of exactly its disk_size: an allocated (not
// sparse) image <bundle>/disk.img on a loop device, mounted at
// <bundle>/disk. A container that fills it gets ENOSPC; the node's data
// directory, where provisiond.db lives, and the other tenants keep their
// space. The image is allocated when the container is made, so the space
// admission promised is really there (and a full node refuses the
// container then, not a tenant's write later).

// MinDiskSize is the disk, in MiB, of a container whose disk_size is
// smaller (0 included): room for ext4's own structures and a few files.
const MinDiskSize = 16

const (
	diskImage = "disk.img"
	diskDir   = "disk"
)

// diskPaths returns the image and mount point of the disk in bundle.
func diskPaths(bundle string) (img, dir string) {
	return filepath.Join(bundle, diskImage), filepath.Join(bundle, diskDir)
}

// ensureDisk creates the disk of bundle (sizeMiB, at least MinDiskSize)
// unless it exists, mounts it unless it is mounted, and returns the mount
// point, with upper/ owned by the container's root (host uid base).
func (m *Manager) ensureDisk(ctx context.Context, bundle string, sizeMiB int64, base uint32) (string, error) {
	img, dir := diskPaths(bundle)
	if _, ok, err := mounts.Find(dir); err != nil {
		return "", err
	} else if !ok {
		if _, err := os.Stat(img); errors.Is(err, fs.ErrNotExist) {
			if err := m.makeDisk(ctx, img, max(sizeMiB, MinDiskSize)<<20); err != nil {
				return "", fmt.Errorf("making disk: %w", err)
			}
		} else if err != nil {
			return "", err
		}
		if err := mountDisk(img, dir); err != nil {
			return "", err
		}
	}
	upper := filepath.Join(dir, "upper")
	if err := os.MkdirAll(upper, 0o755); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "work"), 0o700); err != nil {
		return "", err
	}
	if err := os.Chown(upper, int(base), int(base)); err != nil {
		return "", err
	}
	return dir, nil
}

// makeDisk writes an allocated ext4 image of size bytes under a temporary
// name and renames it, so a crash never leaves a half-made disk.
func (m *Manager) makeDisk(ctx context.Context, img string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(img), 0o711); err != nil {
		return err
	}
	return loop.MakeExt4(ctx, m.mkfs, img+".tmp", img, size)
}

// mountDisk mounts the disk image at dir, from the loop device still bound
// to it if there is one (its container's mount of an earlier instance).
func mountDisk(img, dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	flags := uintptr(unix.MS_NODEV | unix.MS_NOSUID)
	dev, err := loop.Attached(img)
	if err != nil {
		return fmt.Errorf("attaching disk: %w", err)
	}
	if dev != nil {
		err := unix.Mount(dev.Name(), dir, "ext4", flags, "")
		dev.Close()
		if err == nil {
			return nil
		}
	}
	if dev, err = loop.Attach(img); err != nil {
		return fmt.Errorf("attaching disk: %w", err)
	}
	defer dev.Close()
	if err := unix.Mount(dev.Name(), dir, "ext4", flags, ""); err != nil {
		return fmt.Errorf("mounting disk: %w", err)
	}
	return nil
}

// unmountDisk unmounts the disk of bundle and detaches its loop devices.
func unmountDisk(bundle string) error {
	img, dir := diskPaths(bundle)
	if err := mounts.Unmount(dir); err != nil {
		return err
	}
	return loop.Detach(img)
}
