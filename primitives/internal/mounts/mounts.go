// Package mounts reads the mount table of the calling process, so that the
// primitives can tell whether a volume or an overlay is already mounted.
package mounts

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Mount is one line of /proc/self/mountinfo, the fields the primitives use.
type Mount struct {
	// Point is where it is mounted.
	Point string
	// FSType is the filesystem type ("ext4", "overlay", "nsfs", …).
	FSType string
	// Source is the mount source (a device such as /dev/loop3, or "overlay").
	Source string
}

// table is the mount table read; a variable so tests can point it
// elsewhere.
var table = "/proc/self/mountinfo"

// List returns every mount of the calling process's mount namespace, in
// the table's order (a mount stacked on another comes after it). The table
// is parsed by github.com/moby/sys/mountinfo.
func List() ([]Mount, error) {
	f, err := os.Open(table)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	infos, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	ms := make([]Mount, len(infos))
	for i, m := range infos {
		ms[i] = Mount{Point: m.Mountpoint, FSType: m.FSType, Source: m.Source}
	}
	return ms, nil
}

// Find returns the topmost mount at point (cleaned) and whether there is one.
func Find(point string) (Mount, bool, error) {
	ms, err := List()
	if err != nil {
		return Mount{}, false, err
	}
	point = filepath.Clean(point)
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Point == point {
			return ms[i], true, nil
		}
	}
	return Mount{}, false, nil
}

// Unmount unmounts every mount stacked at point; nothing mounted there is
// success. A busy mount is reported as unix.EBUSY.
func Unmount(point string) error {
	for range 16 {
		_, ok, err := Find(point)
		if err != nil || !ok {
			return err
		}
		if err := unix.Unmount(point, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting %s: %w", point, err)
		}
	}
	return fmt.Errorf("unmounting %s: still mounted after 16 unmounts", point)
}
