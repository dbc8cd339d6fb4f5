// Package volume provides provisiond's storage volumes: an allocated (not
// sparse) image file "prv-<id>.img" of exactly the volume's size in the SSD
// or HDD storage path, formatted ext4, attached to a loop device (with the autoclear flag,
// so unmounting detaches it) and mounted at <DataDir>/mounts/prv-<id>. The
// size is enforced by the filesystem itself: a full volume answers ENOSPC.
//
// The image survives a reboot or a daemon restart; Provision and Mount mount
// an image that is present but not mounted.
package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/primitives/internal/loop"
	"github.com/edgeprov/provisiond/primitives/internal/mounts"
	"github.com/edgeprov/provisiond/provision"
)

// Sentinel errors of the volume package.
var (
	ErrNotFound     = errors.New("volume: not found")
	ErrSizeMismatch = errors.New("volume: exists with another size")
	ErrTypeMismatch = errors.New("volume: exists with another type")
	ErrBadSize      = errors.New("volume: bad size")
	ErrBadType      = errors.New("volume: bad disk type")
	ErrBadID        = errors.New("volume: bad id")
	ErrBusy         = errors.New("volume: in use")
)

const (
	imageSuffix = ".img"
	tmpSuffix   = ".img.tmp"
)

// Options configures a Manager.
type Options struct {
	// DataDir is the root of provisiond's data; volumes are mounted under
	// DataDir/mounts. Required.
	DataDir string
	// SSDPath is where ssd volume images live. Default DataDir/volumes/ssd.
	SSDPath string
	// HDDPath is where hdd volume images live. Default DataDir/volumes/hdd.
	HDDPath string
	// Mkfs is the mkfs.ext4 binary. Default "mkfs.ext4".
	Mkfs string
	// Resize2fs and E2fsck are the binaries that grow a volume. Default
	// "resize2fs" and "e2fsck".
	Resize2fs, E2fsck string
	// Log receives debug messages. Default zerolog.Nop().
	Log zerolog.Logger
}

// Info describes a provisioned volume; it is the data of the result.
type Info struct {
	// ID is the volume reservation's id.
	ID string `json:"id"`
	// Path is where the volume is mounted on the node.
	Path string `json:"path"`
}

// Manager creates, mounts and removes volumes. It is safe for concurrent
// use.
type Manager struct {
	mountDir  string
	dirs      map[provision.DiskType]string
	mkfs      string
	resize2fs string
	e2fsck    string
	log       zerolog.Logger
	// mu serialises changes: loop devices and mounts are machine-wide.
	mu sync.Mutex
}

// New returns a Manager. It panics when opts.DataDir is empty.
func New(opts Options) *Manager {
	if opts.DataDir == "" {
		panic("volume: Options.DataDir is required")
	}
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			return filepath.Clean(p)
		}
		return a
	}
	if opts.SSDPath == "" {
		opts.SSDPath = filepath.Join(opts.DataDir, "volumes", "ssd")
	}
	if opts.HDDPath == "" {
		opts.HDDPath = filepath.Join(opts.DataDir, "volumes", "hdd")
	}
	if opts.Mkfs == "" {
		opts.Mkfs = "mkfs.ext4"
	}
	if opts.Resize2fs == "" {
		opts.Resize2fs = "resize2fs"
	}
	if opts.E2fsck == "" {
		opts.E2fsck = "e2fsck"
	}
	return &Manager{
		mountDir:  abs(filepath.Join(opts.DataDir, "mounts")),
		dirs:      map[provision.DiskType]string{provision.SSD: abs(opts.SSDPath), provision.HDD: abs(opts.HDDPath)},
		mkfs:      opts.Mkfs,
		resize2fs: opts.Resize2fs,
		e2fsck:    opts.E2fsck,
		log:       opts.Log.With().Str("component", "volume").Logger(),
	}
}

// Name returns the name of volume id's objects: its mount directory and,
// with ".img", its image file.
func Name(id string) string { return provision.Prefix + id }

// Path returns where volume id is mounted.
func (m *Manager) Path(id string) string { return filepath.Join(m.mountDir, Name(id)) }

func (m *Manager) image(kind provision.DiskType, id string) string {
	return filepath.Join(m.dirs[kind], Name(id)+imageSuffix)
}

func checkID(id string) error {
	if err := provision.ValidName("volume id", id); err != nil {
		return provision.Permanent(fmt.Errorf("%w: %w", ErrBadID, err))
	}
	return nil
}

// Provision creates volume id of size bytes on storage kind and mounts it.
// It is idempotent: an existing image of this size is (re)mounted; a
// smaller one is grown to size (a new version of the volume: see
// finishGrow), its data kept; a larger one (a volume never shrinks) or one
// of another type is a permanent error.
func (m *Manager) Provision(ctx context.Context, id string, kind provision.DiskType, size int64) (Info, error) {
	if err := checkID(id); err != nil {
		return Info{}, err
	}
	if _, ok := m.dirs[kind]; !ok {
		return Info{}, provision.Permanentf("%w: %q", ErrBadType, kind)
	}
	if size <= 0 || size%4096 != 0 {
		return Info{}, provision.Permanentf("%w: %d bytes is not a positive multiple of 4096", ErrBadSize, size)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for other := range m.dirs {
		if other == kind {
			continue
		}
		if _, err := os.Stat(m.image(other, id)); err == nil {
			return Info{}, provision.Permanentf("%w: volume %s is %s, not %s", ErrTypeMismatch, id, other, kind)
		}
	}
	img := m.image(kind, id)
	st, err := os.Stat(img)
	switch {
	case err == nil && st.Size() > size:
		return Info{}, provision.Permanentf("%w: volume %s has %d bytes, more than %d (a volume never shrinks)", ErrSizeMismatch, id, st.Size(), size)
	case err == nil && st.Size() < size:
		// A new version of the volume, larger: grown once mounted (grow.go).
		if err := startGrow(img); err != nil {
			return Info{}, err
		}
	case errors.Is(err, os.ErrNotExist):
		if err := m.create(ctx, img, size); err != nil {
			return Info{}, fmt.Errorf("creating volume %s: %w", id, err)
		}
	case err != nil:
		return Info{}, fmt.Errorf("checking volume %s: %w", id, err)
	}
	p, err := m.mount(img, id)
	if err != nil {
		return Info{}, err
	}
	if err := m.finishGrow(ctx, id, img, size); err != nil {
		return Info{}, err
	}
	m.log.Debug().Str("volume", id).Str("path", p).Int64("size", size).Msg("volume provisioned")
	return Info{ID: id, Path: p}, nil
}

// create makes the image: a file of size bytes, allocated, formatted ext4,
// written under a temporary name and renamed, so a crash never leaves a
// half-made image under the final name.
func (m *Manager) create(ctx context.Context, img string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(img), 0o700); err != nil {
		return err
	}
	tmp := strings.TrimSuffix(img, imageSuffix) + tmpSuffix
	// There is no Go library that writes ext4 well; mkfs.ext4 it is.
	return loop.MakeExt4(ctx, m.mkfs, tmp, img, size)
}

// Mount mounts volume id if its image exists and it is not mounted yet (after
// a reboot or a restart), and returns its path. An absent image is a
// temporary error wrapping ErrNotFound.
func (m *Manager) Mount(ctx context.Context, id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	img, ok := m.find(id)
	if !ok {
		return "", provision.Temporary(fmt.Errorf("%w: volume %s", ErrNotFound, id))
	}
	return m.mount(img, id)
}

// find returns the image of id, whatever its type.
func (m *Manager) find(id string) (string, bool) {
	for kind := range m.dirs {
		if _, err := os.Stat(m.image(kind, id)); err == nil {
			return m.image(kind, id), true
		}
	}
	return "", false
}

func (m *Manager) mount(img, id string) (string, error) {
	target := m.Path(id)
	if _, ok, err := mounts.Find(target); err != nil {
		return "", err
	} else if ok {
		return target, nil
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return "", fmt.Errorf("creating mountpoint of volume %s: %w", id, err)
	}
	// A loop device still bound to the image (held by a container's mount
	// of an earlier instance) is mounted again: one image, one device.
	dev, err := attachedLoop(img)
	if err != nil {
		return "", fmt.Errorf("attaching volume %s: %w", id, err)
	}
	if dev != nil {
		err := unix.Mount(dev.Name(), target, "ext4", unix.MS_NODEV|unix.MS_NOSUID, "")
		dev.Close()
		if err == nil {
			m.log.Info().Str("volume", id).Str("device", dev.Name()).Msg("volume mounted from its attached loop device")
			return target, nil
		}
		// Detached between the check and the mount: attach afresh.
		m.log.Debug().Err(err).Str("volume", id).Str("device", dev.Name()).Msg("attached loop device not mountable")
	}
	if dev, err = attachLoop(img); err != nil {
		return "", fmt.Errorf("attaching volume %s: %w", id, err)
	}
	// The open device keeps the autoclear loop alive until the mount holds
	// it; closing it afterwards leaves the mount as the only user.
	defer dev.Close()
	if err := unix.Mount(dev.Name(), target, "ext4", unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return "", fmt.Errorf("mounting volume %s: %w", id, err)
	}
	return target, nil
}

// Inspect checks that volume id's image exists and is mounted; otherwise it
// returns an error wrapping provision.ErrVanished.
func (m *Manager) Inspect(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, ok := m.find(id); !ok {
		return fmt.Errorf("inspecting volume %s: %w: no image", id, provision.ErrVanished)
	}
	mnt, ok, err := mounts.Find(m.Path(id))
	if err != nil {
		return err
	}
	if !ok || mnt.FSType != "ext4" {
		return fmt.Errorf("inspecting volume %s: %w: not mounted", id, provision.ErrVanished)
	}
	return nil
}

// Decommission unmounts volume id, detaches its loop device and deletes its
// image and mount directory. An absent volume is success; a volume still
// in use by a process on the host is a temporary error wrapping ErrBusy.
func (m *Manager) Decommission(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	target := m.Path(id)
	if err := mounts.Unmount(target); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return provision.Temporary(fmt.Errorf("decommissioning volume %s: %w: %w", id, ErrBusy, err))
		}
		return fmt.Errorf("decommissioning volume %s: %w", id, err)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing mountpoint of volume %s: %w", id, err)
	}
	for kind := range m.dirs {
		img := m.image(kind, id)
		if err := detachLoops(img); err != nil {
			return fmt.Errorf("detaching volume %s: %w", id, err)
		}
		for _, p := range []string{img, strings.TrimSuffix(img, imageSuffix) + tmpSuffix, growMarker(img)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("removing image of volume %s: %w", id, err)
			}
		}
	}
	m.log.Debug().Str("volume", id).Msg("volume decommissioned")
	return nil
}

// List returns the ids of the volumes with an image (or a temporary image
// left by a crash) or a mount directory under the prefix.
func (m *Manager) List(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var ids []string
	add := func(id string) {
		if !seen[id] && provision.ValidName("id", id) == nil {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	for _, kind := range []provision.DiskType{provision.SSD, provision.HDD} {
		entries, err := os.ReadDir(m.dirs[kind])
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("listing volumes: %w", err)
		}
		for _, e := range entries {
			name, ok := strings.CutPrefix(e.Name(), provision.Prefix)
			if !ok || e.IsDir() {
				continue
			}
			if id, ok := strings.CutSuffix(name, tmpSuffix); ok {
				add(id)
			} else if id, ok := strings.CutSuffix(name, imageSuffix); ok {
				add(id)
			}
		}
	}
	entries, err := os.ReadDir(m.mountDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing volume mounts: %w", err)
	}
	for _, e := range entries {
		if id, ok := strings.CutPrefix(e.Name(), provision.Prefix); ok && e.IsDir() {
			add(id)
		}
	}
	return ids, nil
}
