package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/primitives/internal/loop"
	"github.com/edgeprov/provisiond/primitives/internal/mounts"
)

// User namespaces. Each container runs in a user namespace of its own that
// maps its uids and gids 0..IDRange-1 to a host range nobody else uses:
// [base, base+IDRange) with base = UIDBase + slot×IDRange, the slot being
// the lowest one no other bundle holds (as many slots as fit below 2^32-1,
// the invalid uid: 49151 from the default base). The container's root is therefore
// an unprivileged host uid that owns nothing of the node's, and two tenants'
// processes are different host users.
//
// Files are shown with the right owners through idmapped mounts (Linux
// 5.19+ for overlay layers): the image, unpacked once with its own uids,
// is mounted idmapped for each container as the overlay's lower layer, and
// so are the volumes it binds. On disk a volume keeps container-relative
// uids (0 is the container's root), so any container of the user that
// mounts it later sees them as its own. The overlay's upper directory lives
// on the container's own disk, owned by base: what the container writes
// there is stored with its host uids.

// Defaults of the user namespace ranges.
const (
	// IDRange is how many uids and gids a container gets.
	IDRange = 65536
	// DefaultUIDBase is the first host uid (and gid) of the containers'
	// ranges, far above the uids of the node's own users.
	DefaultUIDBase = 1 << 30
)

// uidBaseFile is the file in a bundle that holds its range's first host
// uid: the allocation survives restarts and is freed with the bundle.
const uidBaseFile = "uidbase"

// ErrNoUIDRange is returned when every uid range is taken.
var ErrNoUIDRange = errors.New("container: no free uid range")

// uidBase returns the host uid range base of the container whose bundle is
// given, allocating a free one when it has none. m.idMu serialises
// allocations.
func (m *Manager) uidBase(bundle string) (uint32, error) {
	m.idMu.Lock()
	defer m.idMu.Unlock()
	if b, ok, err := readUIDBase(bundle); err != nil || ok {
		return b, err
	}
	used := map[uint32]bool{}
	entries, err := os.ReadDir(m.bundlesDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("listing bundles: %w", err)
	}
	for _, e := range entries {
		b, ok, err := readUIDBase(filepath.Join(m.bundlesDir, e.Name()))
		if err != nil {
			return 0, err
		}
		if ok {
			used[b] = true
		}
	}
	for slot := uint32(0); slot < uint32(m.idSlots); slot++ {
		b := m.idBase + slot*IDRange
		if used[b] {
			continue
		}
		if err := os.MkdirAll(bundle, 0o711); err != nil {
			return 0, err
		}
		p := filepath.Join(bundle, uidBaseFile)
		if err := os.WriteFile(p+".tmp", []byte(strconv.FormatUint(uint64(b), 10)+"\n"), 0o600); err != nil {
			return 0, err
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return 0, err
		}
		return b, loop.SyncFile(bundle)
	}
	return 0, ErrNoUIDRange
}

// readUIDBase reads a bundle's range base; ok is false when it has none
// (a bundle of a release without user namespaces, or none at all).
func readUIDBase(bundle string) (base uint32, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(bundle, uidBaseFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, false, fmt.Errorf("bad %s in %s: %w", uidBaseFile, bundle, err)
	}
	return uint32(n), true, nil
}

// usernsFile returns an open user namespace that maps 0..IDRange-1 to
// base..: the description of an idmapped mount. A child is started in a
// new user namespace with the mapping (Go writes it before the exec),
// stopped by ptrace at its exec so it runs nothing, and killed once its
// namespace is open.
func usernsFile(base uint32) (*os.File, error) {
	// ptrace ties the child to this thread: start and reap it from it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: IDRange}}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER,
		UidMappings: m,
		GidMappings: m,
		Ptrace:      true,
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("creating a user namespace: %w", err)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	kerr := cmd.Process.Kill()
	_ = cmd.Wait() // killed: its status says so
	if err != nil {
		return nil, fmt.Errorf("opening the user namespace: %w", errors.Join(err, kerr))
	}
	return f, nil
}

// idmapMount mounts a clone of directory src at target, its owners shifted
// by base (on-disk uid k is shown as base+k). A target already mounted is
// left alone.
func idmapMount(src, target string, base uint32) error {
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	if _, mounted, err := mounts.Find(target); err != nil || mounted {
		return err
	}
	ns, err := usernsFile(base)
	if err != nil {
		return err
	}
	defer ns.Close()
	return idmapMountNS(src, target, ns)
}
