// Package layer unpacks an OCI image layer (a tar: plain, gzip or zstd) into a
// directory that overlayfs can use as a lower layer as it is.
//
// OCI whiteouts become overlay's: a ".wh.NAME" entry becomes a character
// device 0:0 named NAME, and ".wh..wh..opq" marks its directory opaque
// with the trusted.overlay.opaque xattr; stacked with overlay's
// lowerdir=top:…:base they hide what lower layers hold, exactly as the
// image spec says. Every path is resolved through an os.Root of the
// directory, so no entry (nor a symlink planted by an earlier one) writes
// outside it. Owners and setuid, setgid and sticky bits are kept; device
// nodes and FIFOs are skipped (a container's /dev is a fresh tmpfs).
package layer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/edgeprov/provisiond/internal/writeback"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// MaxZstdWindow is the largest window a zstd layer may ask its decoder
// to hold in memory (every compression level uses 8 MiB at most; a
// larger one, as zstd --long makes, is refused).
const MaxZstdWindow = 64 << 20

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// ErrTooLarge is returned when a layer unpacks to more than its Limit.
var ErrTooLarge = errors.New("layer: too large")

// Whiteout markers of the OCI image spec.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// Limit bounds what a layer may unpack to: bytes of file content and
// entries.
type Limit struct {
	// Bytes is the most file content.
	Bytes int64
	// Entries is the most tar entries.
	Entries int
}

// Stats is what a layer unpacked to.
type Stats struct {
	// Bytes is its file content.
	Bytes int64 `json:"bytes"`
	// Entries is its tar entries.
	Entries int `json:"entries"`
	// DiffID is the sha256 (hex) of the uncompressed tar.
	DiffID string `json:"diff_id"`
}

// Unpack extracts the layer r (a tar, plain, gzip or zstd) into dir, which must
// exist. Past limit it stops with ErrTooLarge. It reads r to its end, so
// a caller hashing r sees every byte.
func Unpack(ctx context.Context, r io.Reader, dir string, limit Limit) (Stats, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var in io.Reader = br
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		gz, err := gzip.NewReader(br)
		if err != nil {
			return Stats{}, fmt.Errorf("reading gzip: %w", err)
		}
		defer gz.Close()
		in = gz
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxZstdWindow))
		if err != nil {
			return Stats{}, fmt.Errorf("reading zstd: %w", err)
		}
		defer zr.Close()
		in = zr
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Stats{}, err
	}
	defer root.Close()
	if err := os.Chmod(dir, 0o755); err != nil {
		return Stats{}, err
	}
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(in, h))
	var st Stats
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("reading tar: %w", err)
		}
		if st.Entries == limit.Entries {
			return st, fmt.Errorf("%w: more than %d entries", ErrTooLarge, limit.Entries)
		}
		st.Entries++
		if hdr.Typeflag == tar.TypeReg {
			if hdr.Size > limit.Bytes-st.Bytes {
				return st, fmt.Errorf("%w: more than %d bytes of files (at %q)", ErrTooLarge, limit.Bytes, hdr.Name)
			}
			st.Bytes += hdr.Size
		}
		if err := extract(root, hdr, tr); err != nil {
			return st, fmt.Errorf("extracting %q: %w", hdr.Name, err)
		}
	}
	// The tar's end-of-archive blocks and any padding are part of the
	// diff ID; the rest of the compressed stream is read for the caller.
	if _, err := io.Copy(h, in); err != nil {
		return st, fmt.Errorf("reading layer: %w", err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return st, fmt.Errorf("reading layer: %w", err)
	}
	st.DiffID = hex.EncodeToString(h.Sum(nil))
	return st, nil
}

// clean turns an archive path into a path relative to the root, "." for
// the root itself.
func clean(name string) string {
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	if p == "" {
		return "."
	}
	return p
}

// extract writes one entry of a layer: an OCI whiteout or opaque marker
// as overlay's, anything else as WriteEntry does.
func extract(root *os.Root, hdr *tar.Header, r io.Reader) error {
	name := clean(hdr.Name)
	dir, base := path.Dir(name), path.Base(name)
	hidden, marked := strings.CutPrefix(base, whiteoutPrefix)
	if name == "." || !marked {
		return WriteEntry(root, hdr, r)
	}
	if err := root.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if base == opaqueMarker {
		return opaque(root, dir)
	}
	if hidden == "" || hidden == "." || hidden == ".." {
		return fmt.Errorf("bad whiteout %q", hdr.Name)
	}
	return whiteout(root, path.Join(dir, hidden))
}

// WriteEntry writes one tar entry below root as tar semantics want it:
// parents made, an earlier entry of the name replaced (a directory is
// kept and takes the entry's mode), owner and mode (setuid, setgid,
// sticky) kept, symlinks and hard links confined to root; devices,
// fifos and metadata entries are skipped. r is the entry's content.
func WriteEntry(root *os.Root, hdr *tar.Header, r io.Reader) error {
	name := clean(hdr.Name)
	if name != "." {
		if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
			return err
		}
	}
	mode := hdr.FileInfo().Mode()
	switch hdr.Typeflag {
	case tar.TypeDir:
		if name != "." {
			if st, err := root.Lstat(name); err == nil && !st.IsDir() {
				root.Remove(name)
			}
			if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		}
	case tar.TypeReg:
		removeNonDir(root, name)
		f, err := root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		if hdr.Size >= writeback.Window {
			// A large file: its writeback starts as it is written
			// (the unpack ends with one syncfs).
			_, err = writeback.Copy(f, 0, r)
		} else {
			_, err = io.Copy(f, r)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		removeNonDir(root, name)
		if err := root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		return root.Lchown(name, hdr.Uid, hdr.Gid)
	case tar.TypeLink:
		removeNonDir(root, name)
		return root.Link(clean(hdr.Linkname), name)
	default:
		return nil // devices, fifos, pax/GNU metadata entries
	}
	if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	return root.Chmod(name, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
}

// whiteout makes name overlay's whiteout: a character device 0:0. It is
// made with mknodat in its parent directory opened through root, so a
// symlink cannot lead it elsewhere.
func whiteout(root *os.Root, name string) error {
	if st, err := root.Lstat(name); err == nil {
		if st.IsDir() {
			if err := root.RemoveAll(name); err != nil {
				return err
			}
		} else if err := root.Remove(name); err != nil {
			return err
		}
	}
	parent, err := root.Open(path.Dir(name))
	if err != nil {
		return err
	}
	defer parent.Close()
	if err := unix.Mknodat(int(parent.Fd()), path.Base(name), unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("making whiteout %s: %w", name, err)
	}
	return nil
}

// opaque marks directory dir opaque: overlay shows none of what lower
// layers hold in it.
func opaque(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if st, err := d.Stat(); err != nil {
		return err
	} else if !st.IsDir() {
		return fmt.Errorf("opaque marker in %s, which is not a directory", dir)
	}
	if err := unix.Fsetxattr(int(d.Fd()), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		return fmt.Errorf("marking %s opaque: %w", dir, err)
	}
	return nil
}

// removeNonDir removes an earlier entry of the same name, unless it is a
// directory, so a later entry replaces it as tar semantics require.
func removeNonDir(root *os.Root, name string) {
	if st, err := root.Lstat(name); err == nil && !st.IsDir() {
		root.Remove(name)
	}
}
