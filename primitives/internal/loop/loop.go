// Package loop binds image files to loop devices, for the volumes and the
// containers' disks.
package loop

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const loopControl = "/dev/loop-control"

// Attach binds img to a free loop device with LOOP_CONFIGURE and the
// autoclear flag, and returns the open device. The device detaches itself
// when its last user (the open file, then the mount) lets go of it.
func Attach(img string) (*os.File, error) {
	ctl, err := os.OpenFile(loopControl, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", loopControl, err)
	}
	defer ctl.Close()
	backing, err := os.OpenFile(img, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening image: %w", err)
	}
	defer backing.Close()
	var lastErr error
	// Another process may take the free device between GET_FREE and
	// CONFIGURE (EBUSY); try the next one.
	for range 16 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		dev, err := os.OpenFile(fmt.Sprintf("/dev/loop%d", n), os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening loop device %d: %w", n, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:unix.LO_NAME_SIZE-1], img)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("configuring loop device %d: %w", n, err)
		}
		lastErr = err
	}
	return nil, fmt.Errorf("configuring a loop device: %w", lastErr)
}

// loopsOf returns the loop devices (/dev/loopN) whose backing file is img.
func loopsOf(img string) ([]string, error) {
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // detached meanwhile
		}
		backing := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		if backing == img {
			devs = append(devs, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return devs, nil
}

// Attached returns an open loop device already bound to img (the same
// file, by device and inode, writable), or nil when there is none. After
// a daemon restart, or when the previous instance mounted the volume in a
// mount namespace that is gone, the device a container still writes
// through is kept attached by that container's mount: the volume is then
// mounted from it again rather than from a second loop device, which would
// put two ext4 instances on one image.
func Attached(img string) (*os.File, error) {
	devs, err := loopsOf(img)
	if err != nil || len(devs) == 0 {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(img, &st); err != nil {
		return nil, fmt.Errorf("checking image: %w", err)
	}
	for _, d := range devs {
		f, err := os.OpenFile(d, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // detached meanwhile, or its node is missing
		}
		info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		if err == nil && info.Inode == st.Ino && info.Device == st.Dev && info.Flags&unix.LO_FLAGS_READ_ONLY == 0 {
			return f, nil
		}
		f.Close()
	}
	return nil, nil
}

// Detach clears every loop device still bound to img (one left by an
// interrupted attach elsewhere, or attached by hand); they are not mounted
// any more once the volume is unmounted. Autoclear devices whose mount is
// gone have detached already.
//
// Loop devices are the machine's, and a backing file's path is shown as
// the kernel sees it: from inside a container, a loop the host bound to a
// file of the same path looks like ours. So while img exists, only devices
// bound to that very file (device and inode) are detached, and none once
// it is gone.
func Detach(img string) error {
	devs, err := loopsOf(img)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(img, &st); errors.Is(err, unix.ENOENT) {
		return nil // no image, no device of ours to detach
	} else if err != nil {
		return fmt.Errorf("checking image: %w", err)
	}
	for _, d := range devs {
		f, err := os.OpenFile(d, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("opening %s: %w", d, err)
		}
		if info, err := unix.IoctlLoopGetStatus64(int(f.Fd())); err == nil && (info.Inode != st.Ino || info.Device != st.Dev) {
			f.Close()
			continue // another file of the same path: not ours
		}
		err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.ENXIO) {
			return fmt.Errorf("detaching %s: %w", d, err)
		}
	}
	return nil
}
