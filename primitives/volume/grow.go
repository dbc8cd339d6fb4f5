package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/primitives/internal/mounts"
	"github.com/edgeprov/provisiond/provision"
)

// growSuffix names the marker of a grow in progress: written before the
// image grows, removed once the filesystem fills it, so that a crash in
// between is finished by the next Provision.
const growSuffix = ".img.grow"

// growMarker returns the marker file of image img.
func growMarker(img string) string { return strings.TrimSuffix(img, imageSuffix) + growSuffix }

// startGrow records that img is to grow (before anything changes).
func startGrow(img string) error {
	if err := os.WriteFile(growMarker(img), nil, 0o600); err != nil {
		return fmt.Errorf("marking the grow of %s: %w", img, err)
	}
	return nil
}

// finishGrow, when a grow of img is marked, makes the mounted volume id
// fill size bytes: the image allocated to size, then the ext4 filesystem
// grown to fill it, and the marker removed. With CAP_SYS_RESOURCE (the
// daemon's unit grants it) the grow is online: the loop device is told
// its new capacity and resize2fs grows the mounted filesystem, under a
// running container too. Without it, a volume that nothing else mounts
// (no container uses it) is grown offline: unmounted, checked (e2fsck),
// grown (resize2fs on the image) and mounted again; one a container uses
// cannot be grown, a permanent error, and the marker is dropped (the
// image unchanged). Each step is idempotent; m.mu is held.
func (m *Manager) finishGrow(ctx context.Context, id, img string, size int64) error {
	if _, err := os.Stat(growMarker(img)); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	dev, err := attachedLoop(img)
	if err != nil || dev == nil {
		return fmt.Errorf("volume %s: no loop device to grow (%v)", id, err)
	}
	defer dev.Close()
	online := hasSysResource()
	if !online {
		if other, err := m.mountedElsewhere(id, dev.Name()); err != nil {
			return err
		} else if other != "" {
			if err := os.Remove(growMarker(img)); err != nil {
				return err
			}
			return provision.Permanentf("%w: volume %s is mounted at %s (a container uses it): growing it online needs CAP_SYS_RESOURCE, which this daemon lacks", ErrBusy, id, other)
		}
	}
	f, err := os.OpenFile(img, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("growing the image of volume %s to %d bytes: %w", id, size, err)
	}
	if online {
		if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
			return fmt.Errorf("volume %s: setting the loop capacity: %w", id, err)
		}
		// Online grow of the mounted ext4; a no-op when it fills the device.
		if err := m.run(ctx, m.resize2fs, dev.Name()); err != nil {
			return fmt.Errorf("volume %s: %w", id, err)
		}
	} else {
		dev.Close()
		if err := mounts.Unmount(m.Path(id)); err != nil {
			return fmt.Errorf("volume %s: unmounting to grow it: %w", id, err)
		}
		if err := detachLoops(img); err != nil {
			return fmt.Errorf("volume %s: %w", id, err)
		}
		// resize2fs wants a freshly checked filesystem; e2fsck -p exits 1
		// when it fixed something, which is fine.
		if err := m.run(ctx, m.e2fsck, "-f", "-p", img); err != nil && !exitCode(err, 1) {
			return fmt.Errorf("volume %s: %w", id, err)
		}
		if err := m.run(ctx, m.resize2fs, img); err != nil {
			return fmt.Errorf("volume %s: %w", id, err)
		}
		if _, err := m.mount(img, id); err != nil {
			return err
		}
	}
	if err := os.Remove(growMarker(img)); err != nil {
		return err
	}
	m.log.Info().Str("volume", id).Int64("size", size).Bool("online", online).Msg("volume grown")
	return nil
}

// run runs a command and puts its output in the error.
func (m *Manager) run(ctx context.Context, bin string, args ...string) error {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return &cmdError{cmd: bin + " " + strings.Join(args, " "), err: err, out: strings.TrimSpace(string(out))}
	}
	return nil
}

type cmdError struct {
	cmd, out string
	err      error
}

func (e *cmdError) Error() string { return fmt.Sprintf("%s: %v: %s", e.cmd, e.err, e.out) }
func (e *cmdError) Unwrap() error { return e.err }

// exitCode reports whether err is a command's exit with code.
func exitCode(err error, code int) bool {
	var x *exec.ExitError
	return errors.As(err, &x) && x.ExitCode() == code
}

// mountedElsewhere returns a mount point of device dev other than volume
// id's own, "" when none.
func (m *Manager) mountedElsewhere(id, dev string) (string, error) {
	ms, err := mounts.List()
	if err != nil {
		return "", err
	}
	for _, mt := range ms {
		if mt.Source == dev && mt.Point != m.Path(id) {
			return mt.Point, nil
		}
	}
	return "", nil
}

// hasSysResource reports whether the process has CAP_SYS_RESOURCE, which
// the kernel asks of an online ext4 resize.
func hasSysResource() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0
}
