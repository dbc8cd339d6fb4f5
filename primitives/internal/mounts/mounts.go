// Package mounts reads the mount table of the calling process, so that the
// primitives can tell whether a volume or an overlay is already mounted.
package mounts

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	// Point is where it is mounted.
	Point string
	// FSType is the filesystem type ("ext4", "overlay", "nsfs", …).
	FSType string
	// Source is the mount source (a device such as /dev/loop3, or "overlay").
	Source string
}

// mountinfo is the mount table read; a variable so tests can point it
// elsewhere.
var mountinfo = "/proc/self/mountinfo"

// List returns every mount of the calling process's mount namespace.
func List() ([]Mount, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	var ms []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, ok := parse(sc.Text())
		if ok {
			ms = append(ms, m)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	return ms, nil
}

// parse reads one mountinfo line:
// id parent major:minor root point options [optional...] - fstype source superopts.
func parse(line string) (Mount, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" && i >= 6 {
			sep = i
			break
		}
	}
	if sep < 0 || len(fields) < sep+3 {
		return Mount{}, false
	}
	return Mount{Point: unescape(fields[4]), FSType: fields[sep+1], Source: unescape(fields[sep+2])}, true
}

// unescape undoes the octal escapes (\040 for space…) of mountinfo.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
