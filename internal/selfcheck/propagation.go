package selfcheck

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// fixPropagation is the fix of a daemon whose mounts do not reach the
// host: the defect of the first unit (ProtectSystem, ProtectHome).
const fixPropagation = "provisiond runs in a mount namespace of its own whose mounts do not reach the host: " +
	"its volume mounts, container root filesystems and /run/netns bind mounts are lost to the next instance " +
	"after a restart, and repair then mounts a volume image a second time. " +
	"Remove ProtectSystem=, ProtectHome=, PrivateTmp=, PrivateDevices=, PrivateMounts=, ReadOnlyPaths=, " +
	"InaccessiblePaths=, TemporaryFileSystem= and BindPaths= from its unit (`systemctl cat provisiond`), " +
	"or start it in the host's mount namespace"

// checkPropagation mounts a small tmpfs, under a name no one else uses, in
// a fresh directory below each probe directory, looks for it in the host
// init's mount table, and unmounts it. A mount the host cannot see is the
// failure; the namespaces' identities only go into the detail (a daemon
// in a namespace of its own whose mounts propagate, MountFlags=shared, is
// fine).
func checkPropagation(_ context.Context, o *Options) Result {
	ns := namespaces(o)
	if len(o.ProbeDirs) == 0 {
		return failed("give the check the directories the daemon mounts into", "no probe directory configured (%s)", ns)
	}
	var visible, hidden []string
	for _, dir := range o.ProbeDirs {
		// A directory the daemon has not made yet: its nearest parent
		// is where its mounts would go. The check creates no directory
		// the daemon would create with its own mode.
		dir = existing(dir)
		seen, err := probe(dir, o.HostMountinfo)
		if err != nil {
			return failed(fixPropagationProbe(err), "probing mounts below %s: %v (%s)", dir, err, ns)
		}
		if seen {
			visible = append(visible, dir)
		} else {
			hidden = append(hidden, dir)
		}
	}
	if len(hidden) > 0 {
		return failed(fixPropagation, "a tmpfs mounted below %s does not show in %s (%s)",
			strings.Join(hidden, ", "), o.HostMountinfo, ns)
	}
	return ok("mounts below %s show in %s (%s)", strings.Join(visible, ", "), o.HostMountinfo, ns)
}

// fixPropagationProbe is the fix when the probe itself could not run.
func fixPropagationProbe(err error) string {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return "run provisiond as root with CAP_SYS_ADMIN (it mounts volumes and overlays)"
	}
	return "make the directory writable for root and let the daemon read /proc/1/mountinfo"
}

// namespaces describes the caller's mount namespace against the host's.
func namespaces(o *Options) string {
	self, err1 := os.Readlink(o.SelfMountNS)
	host, err2 := os.Readlink(o.HostMountNS)
	switch {
	case err1 != nil || err2 != nil:
		return "mount namespaces not comparable: " + errors.Join(err1, err2).Error()
	case self == host:
		return "same mount namespace as PID 1, " + self
	}
	return fmt.Sprintf("own mount namespace %s, PID 1 has %s", self, host)
}

// probe mounts a uniquely named tmpfs in a fresh directory below dir and
// reports whether hostMountinfo lists it. It leaves nothing behind.
func probe(dir, hostMountinfo string) (bool, error) {
	target, err := os.MkdirTemp(dir, ".selfcheck-")
	if err != nil {
		return false, err
	}
	defer os.Remove(target)
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return false, err
	}
	source := "provisiond-selfcheck-" + hex.EncodeToString(b[:])
	if err := unix.Mount(source, target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,mode=0700"); err != nil {
		return false, fmt.Errorf("mounting a tmpfs on %s: %w", target, err)
	}
	seen, err := listed(hostMountinfo, source)
	if uerr := unix.Unmount(target, 0); uerr != nil {
		// Busy should not happen (nothing opened it); detach it rather than leave it.
		if derr := unix.Unmount(target, unix.MNT_DETACH); derr != nil {
			return false, errors.Join(err, fmt.Errorf("unmounting %s: %w", target, uerr))
		}
	}
	return seen, err
}

// listed reports whether the mount table at path has a mount of source.
func listed(path, source string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("reading the host's mount table: %w", err)
	}
	defer f.Close()
	ms, err := mountinfo.GetMountsFromReader(f, func(i *mountinfo.Info) (bool, bool) {
		return i.Source != source, i.Source == source
	})
	if err != nil {
		return false, fmt.Errorf("reading the host's mount table %s: %w", filepath.Clean(path), err)
	}
	return len(ms) > 0, nil
}

// existing returns dir, or its nearest parent that exists.
func existing(dir string) string {
	dir = filepath.Clean(dir)
	for {
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}
