package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/moby/sys/mountinfo"
)

// imageLeases protects unpacked images from the garbage collector while a
// Provision uses them (containerd's leases): a Provision holds a lease on
// its digest from before it looks for the image until its container runs;
// a sweep never removes a leased image, nor one leased since the sweep
// began, and removes an image under the same lock a lease is taken with.
type imageLeases struct {
	mu    sync.Mutex
	held  map[string]int    // digest → leases held
	last  map[string]uint64 // digest → the sweep mark current at its last lease
	mark  uint64            // incremented by each sweep's start
	sweep sync.Mutex        // one sweep at a time
}

// lease takes a lease on digest; release gives it back.
func (l *imageLeases) lease(digest string) (release func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == nil {
		l.held, l.last = map[string]int{}, map[string]uint64{}
	}
	l.held[digest]++
	l.last[digest] = l.mark
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.held[digest]--; l.held[digest] <= 0 {
			delete(l.held, digest)
		}
	}
}

// ImageSweep is the first half of a sweep of unpacked images: Begin marks
// its start, before the caller reads which images its records reference;
// Remove then removes the others. An image a Provision leased after Begin
// is kept even when the caller's records did not name it: its record may
// have been written after the caller read.
type ImageSweep struct {
	m    *Manager
	mark uint64
}

// BeginImageSweep starts a sweep of the unpacked images. Call Remove on
// the result once, after reading what the store references.
func (m *Manager) BeginImageSweep() *ImageSweep {
	m.leases.sweep.Lock()
	m.leases.mu.Lock()
	defer m.leases.mu.Unlock()
	m.leases.mark++
	return &ImageSweep{m: m, mark: m.leases.mark}
}

// SweepResult says what a sweep of images removed.
type SweepResult struct {
	// Images are the digests of the unpacked images removed.
	Images []string
	// Temporary counts the leftover directories of interrupted unpacks
	// and removals removed.
	Temporary int
	// Blobs and Layers are the digests of the registry images' blobs
	// and unpacked layers removed.
	Blobs, Layers []string
	// Bytes is what the removed directories allocated on disk.
	Bytes int64
}

// Remove removes every unpacked image whose digest keep does not report
// and that no container uses now (a mounted overlay naming it as its lower
// layer), is not leased and was not leased since BeginImageSweep; and every
// temporary directory of an unpack (".tmp-*") that no lease covers, or of
// an interrupted removal (".gc-*"): what a kill -9 left. An image is first
// renamed out of the way under the lease lock, so a Provision either finds
// it whole or not at all (and fetches it again).
func (s *ImageSweep) Remove(ctx context.Context, keep func(digest string) bool) (SweepResult, error) {
	m := s.m
	defer m.leases.sweep.Unlock()
	var res SweepResult
	if err := s.sweepRegistry(ctx, keep, &res); err != nil {
		return res, err
	}
	entries, err := os.ReadDir(m.imagesDir)
	if errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("listing images: %w", err)
	}
	mounted, err := m.mountedImages()
	if err != nil {
		return res, fmt.Errorf("listing the images containers use: %w", err)
	}
	var doomed []string // renamed, to remove without the lock
	var errs []error
	m.leases.mu.Lock()
	for _, e := range entries {
		name := e.Name()
		switch {
		case isDigest(name):
			if keep(name) || mounted[name] || m.leases.held[name] > 0 || m.leases.last[name] >= s.mark {
				continue
			}
			gone := filepath.Join(m.imagesDir, fmt.Sprintf(".gc-%s-%d", name, s.mark))
			if err := os.Rename(filepath.Join(m.imagesDir, name), gone); err != nil {
				errs = append(errs, fmt.Errorf("removing image %s: %w", name, err))
				continue
			}
			delete(m.leases.last, name)
			res.Images = append(res.Images, name)
			doomed = append(doomed, gone)
		case strings.HasPrefix(name, ".tmp-"):
			if m.unpacking(name) {
				continue
			}
			res.Temporary++
			doomed = append(doomed, filepath.Join(m.imagesDir, name))
		case strings.HasPrefix(name, ".gc-") && !slices.Contains(doomed, filepath.Join(m.imagesDir, name)):
			res.Temporary++
			doomed = append(doomed, filepath.Join(m.imagesDir, name))
		}
	}
	m.leases.mu.Unlock()
	for _, d := range doomed {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		res.Bytes += Allocated(d)
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", filepath.Base(d), err))
		}
	}
	if len(res.Images) > 0 || res.Temporary > 0 {
		m.log.Info().Strs("images", res.Images).Int("temporary", res.Temporary).Int64("bytes", res.Bytes).Msg("unused images removed")
	}
	return res, errors.Join(errs...)
}

// unpacking reports whether the temporary directory name (".tmp-<first 12
// hex of the digest>-<random>") may belong to an unpack running now: one
// whose digest is leased. Called with leases.mu held.
func (m *Manager) unpacking(name string) bool {
	prefix, _, _ := strings.Cut(strings.TrimPrefix(name, ".tmp-"), "-")
	for d := range m.leases.held {
		if strings.HasPrefix(d, prefix) {
			return true
		}
	}
	return false
}

// mountedImages returns the digests of the images containers use now, read
// from the mount table: an image mounted idmapped at a bundle's "lower"
// (its mount's root is the image's directory), or named as the lower layer
// of an overlay (a container of a release before user namespaces).
func (m *Manager) mountedImages() (map[string]bool, error) {
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	prefix := m.imagesDir + "/"
	for _, mi := range infos {
		if filepath.Base(mi.Mountpoint) == "lower" && strings.HasPrefix(mi.Mountpoint, m.bundlesDir+"/") {
			if d := filepath.Base(mi.Root); isDigest(d) {
				used[d] = true
			}
			continue
		}
		if mi.FSType != "overlay" {
			continue
		}
		for _, opt := range strings.Split(mi.VFSOptions, ",") {
			lower, ok := strings.CutPrefix(opt, "lowerdir=")
			if !ok {
				continue
			}
			for _, dir := range strings.Split(lower, ":") {
				if d, ok := strings.CutPrefix(dir, prefix); ok {
					used[strings.SplitN(d, "/", 2)[0]] = true
				}
			}
		}
	}
	return used, nil
}

func isDigest(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

// Allocated returns the bytes allocated on disk to path and, for a
// directory, everything below it on the same filesystem (mount points
// below it, such as a container's overlay root, are not entered). Files
// that vanish meanwhile count nothing.
func Allocated(path string) int64 {
	root, err := os.Lstat(path)
	if err != nil {
		return 0
	}
	dev := deviceOf(root)
	var n int64
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if d.IsDir() && p != path && deviceOf(info) != dev {
			return filepath.SkipDir
		}
		n += blocksOf(info)
		return nil
	})
	return n
}

func deviceOf(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev)
	}
	return 0
}

func blocksOf(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

// SweepImages removes the unpacked images no record references (see
// ImageSweep.Remove): it marks the sweep's start, then calls referenced
// for the digests the store's live records name, then removes the rest.
// An error of referenced removes nothing.
func (m *Manager) SweepImages(ctx context.Context, referenced func() (map[string]bool, error)) (SweepResult, error) {
	sw := m.BeginImageSweep()
	refs, err := referenced()
	if err != nil {
		m.leases.sweep.Unlock()
		return SweepResult{}, fmt.Errorf("reading the images records reference (nothing removed): %w", err)
	}
	return sw.Remove(ctx, func(d string) bool { return refs[d] })
}

// Dirs returns the directories of the Manager: unpacked images, bundles,
// runc's state and logs.
func (m *Manager) Dirs() (images, bundles, runc, logs string) {
	return m.imagesDir, m.bundlesDir, m.runc.root, m.logsDir
}
