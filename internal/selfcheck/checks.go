package selfcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Fixes named by the checks.
const (
	fixLoopModule = "load the loop module (`modprobe loop`; at boot: `echo loop > /etc/modules-load.d/loop.conf`); " +
		"in a container, bind /dev/loop-control and every /dev/loopN into it"
	fixLoopDevice = "create the loop device node the kernel handed out (`mknod /dev/loopN b 7 N` on the host) " +
		"and, in a container, bind every /dev/loopN into it"
	fixLoopFree  = "free unused loop devices (`losetup -l`, `losetup -d /dev/loopN`) or allow more (`modprobe loop max_loop=256`)"
	fixLoopPerm  = "run provisiond as root with CAP_SYS_ADMIN; its unit must not set DevicePolicy=, DeviceAllow= or PrivateDevices="
	fixLoopIoctl = "use Linux 5.8 or later (LOOP_CONFIGURE)"
	fixRunc      = "install runc (`apt-get install runc`) so that it is on the daemon's PATH"
	fixMkfs      = "install e2fsprogs (`apt-get install e2fsprogs`) so that mkfs.ext4 is on the daemon's PATH"
	fixTun       = "load the tun module (`modprobe tun`); in a container, bind /dev/net/tun into it"
)

// checkLoop opens the loop control device and attaches a 1 MiB sparse file
// to a free loop device the way the volume primitive does (LOOP_CTL_GET_FREE,
// LOOP_CONFIGURE with autoclear), then lets it go.
func checkLoop(_ context.Context, o *Options) Result {
	ctl, err := os.OpenFile(o.LoopControl, os.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return failed(fixLoopModule, "%s does not exist", o.LoopControl)
	case errors.Is(err, fs.ErrPermission):
		return failed(fixLoopPerm, "opening %s: %v", o.LoopControl, err)
	case err != nil:
		return failed(fixLoopModule, "opening %s: %v", o.LoopControl, err)
	}
	defer ctl.Close()
	dir := os.TempDir()
	if o.Scratch != "" {
		dir = existing(o.Scratch)
	}
	img, err := os.CreateTemp(dir, "provisiond-selfcheck-*.img")
	if err != nil {
		return failed("make "+dir+" writable for root", "creating a scratch image: %v", err)
	}
	defer os.Remove(img.Name())
	defer img.Close()
	if err := img.Truncate(1 << 20); err != nil {
		return failed("make "+dir+" writable for root", "sizing the scratch image: %v", err)
	}
	var lastErr error
	for range 16 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return failed(fixLoopModule, "%s is not a loop control device: %v", o.LoopControl, err)
		}
		if err != nil {
			return failed(fixLoopFree, "finding a free loop device: %v", err)
		}
		path := filepath.Join(o.DevDir, fmt.Sprintf("loop%d", n))
		dev, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return failed(fixLoopDevice, "the kernel offers loop device %d but %s does not exist", n, path)
		}
		if err != nil {
			return failed(fixLoopPerm, "opening %s: %v", path, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:unix.LO_NAME_SIZE-1], img.Name())
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			// Autoclear: the device lets go of the image on this close.
			dev.Close()
			return ok("attached a scratch image to %s and released it", path)
		}
		dev.Close()
		switch {
		case errors.Is(err, unix.EBUSY):
			lastErr = err // taken meanwhile: try the next one
			continue
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return failed(fixLoopPerm, "configuring %s: %v", path, err)
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOTTY):
			return failed(fixLoopIoctl, "configuring %s: %v", path, err)
		}
		return failed(fixLoopFree, "configuring %s: %v", path, err)
	}
	return failed(fixLoopFree, "every free loop device was taken meanwhile: %v", lastErr)
}

// runCmd runs bin with args and returns the first line of its output
// (stdout, else stderr).
func runCmd(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	line := firstLine(stdout.Bytes())
	if line == "" {
		line = firstLine(stderr.Bytes())
	}
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s did not answer in time: %w", bin, ctx.Err())
		}
		if line != "" {
			return "", fmt.Errorf("%w: %s", err, line)
		}
		return "", err
	}
	return line, nil
}

// checkBinary runs bin with args and expects an answer.
func checkBinary(ctx context.Context, bin, fix string, args ...string) Result {
	path, err := exec.LookPath(bin)
	if err != nil {
		return failed(fix, "%s not found: %v", bin, err)
	}
	line, err := runCmd(ctx, path, args...)
	if err != nil {
		return failed(fix, "%s %s failed: %v", path, strings.Join(args, " "), err)
	}
	return ok("%s: %s", path, line)
}

func checkRunc(ctx context.Context, o *Options) Result {
	return checkBinary(ctx, o.Runc, fixRunc, "--version")
}

func checkMkfs(ctx context.Context, o *Options) Result {
	return checkBinary(ctx, o.Mkfs, fixMkfs, "-V")
}

// checkTun looks for the TUN clone device. Nothing but WireGuard
// networks uses it, so its absence is a warning.
func checkTun(_ context.Context, o *Options) Result {
	f, err := os.OpenFile(o.TunDevice, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return warn(fixTun, "opening %s: %v", o.TunDevice, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return warn(fixTun, "reading %s: %v", o.TunDevice, err)
	}
	if st.Mode()&fs.ModeCharDevice == 0 {
		return warn(fixTun, "%s is not a character device (%s)", o.TunDevice, st.Mode())
	}
	return ok("%s opens", o.TunDevice)
}

// Controllers the container primitive's runtime spec sets limits with
// (primitives/container/bundle.go): CPU quota, memory, pids; on cgroup v1
// runc also needs the devices controller for the device rules (v2 uses
// eBPF instead).
var (
	cgroupV1Controllers = []string{"cpu", "memory", "pids", "devices"}
	cgroupV2Controllers = []string{"cpu", "memory", "pids"}
)

// checkCgroups finds out which cgroup version runc will use — v2 when
// CgroupRoot itself is a cgroup2 mount, else v1 (also in the hybrid
// layout) — and checks that each controller the containers need is there
// and writable.
func checkCgroups(_ context.Context, o *Options) Result {
	f, err := os.Open(o.Mountinfo)
	if err != nil {
		return failed("mount /proc", "reading the mount table: %v", err)
	}
	defer f.Close()
	ms, err := mountinfo.GetMountsFromReader(f, func(i *mountinfo.Info) (bool, bool) {
		return i.FSType != "cgroup" && i.FSType != "cgroup2", false
	})
	if err != nil {
		return failed("mount /proc", "reading the mount table: %v", err)
	}
	root := filepath.Clean(o.CgroupRoot)
	for i := len(ms) - 1; i >= 0; i-- {
		if m := ms[i]; m.Mountpoint == root && m.FSType == "cgroup2" {
			return checkCgroupV2(m, root)
		}
	}
	return checkCgroupV1(ms, root)
}

func checkCgroupV2(m *mountinfo.Info, root string) Result {
	if !hasOpt(m.Options, "rw") {
		return failed("mount the cgroup2 hierarchy at "+root+" read-write (systemd-nspawn mounts it read-only unless the unified hierarchy is delegated)",
			"cgroup v2 at %s is mounted read-only (%s)", root, m.Options)
	}
	b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return failed("mount the cgroup2 hierarchy at "+root, "reading cgroup v2 controllers: %v", err)
	}
	have := strings.Fields(string(b))
	var missing []string
	for _, c := range cgroupV2Controllers {
		if !slices.Contains(have, c) {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return failed(fmt.Sprintf("enable the cgroup v2 controllers %s: nothing may hold them in cgroup v1 (unmount those v1 hierarchies), "+
			"and the kernel must have them (for memory, boot with cgroup_enable=memory)", strings.Join(missing, ", ")),
			"cgroup v2 at %s lacks %s (has: %s)", root, strings.Join(missing, ", "), strings.Join(have, " "))
	}
	return ok("cgroup v2 at %s: %s", root, strings.Join(cgroupV2Controllers, ", "))
}

func checkCgroupV1(ms []*mountinfo.Info, root string) Result {
	var missing, readOnly []string
	for _, c := range cgroupV1Controllers {
		var found *mountinfo.Info
		for _, m := range ms {
			if m.FSType == "cgroup" && hasOpt(m.VFSOptions, c) {
				found = m // the last mount wins, as in the kernel's view
			}
		}
		switch {
		case found == nil:
			missing = append(missing, c)
		case !hasOpt(found.Options, "rw"):
			readOnly = append(readOnly, c+" ("+found.Mountpoint+")")
		}
	}
	if len(missing) > 0 {
		c := missing[0]
		return failed(fmt.Sprintf("mount the cgroup v1 controllers %s (e.g. `mkdir -p %s/%s && mount -t cgroup -o %s cgroup %s/%s`); "+
			"a controller /proc/cgroups shows disabled needs a kernel parameter (for memory: cgroup_enable=memory)",
			strings.Join(missing, ", "), root, c, c, root, c),
			"cgroup v1: no %s controller mounted", strings.Join(missing, ", "))
	}
	if len(readOnly) > 0 {
		return failed("mount these controllers read-write (systemd-nspawn mounts them read-only: bind the host's /sys/fs/cgroup/<controller> over them)",
			"cgroup v1: read-only %s", strings.Join(readOnly, ", "))
	}
	return ok("cgroup v1: %s", strings.Join(cgroupV1Controllers, ", "))
}

// hasOpt reports whether the comma-separated option list opts holds opt.
func hasOpt(opts, opt string) bool {
	return slices.Contains(strings.Split(opts, ","), opt)
}
