package container

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/edgeprov/provisiond/internal/layer"
	"github.com/edgeprov/provisiond/provision"
)

// ImageDir returns where the image of digest is unpacked.
func (m *Manager) ImageDir(digest string) string { return filepath.Join(m.imagesDir, digest) }

// ensureImage returns the directory holding the unpacked image of digest,
// fetching, verifying and unpacking src when it is not there yet. The image
// is read once: it is unpacked into a temporary directory while its sha256
// is computed, and the directory is renamed into place only when the digest
// matches. A mismatch is a permanent error wrapping ErrDigestMismatch and
// leaves nothing behind.
func (m *Manager) ensureImage(ctx context.Context, src, digest string) (string, error) {
	var rel string // a local image's path below the local image directory
	if !provision.IsImageURL(src) {
		// Checked before the cache too: a path the node does not serve
		// is refused even when the image of its digest is unpacked.
		var err error
		if rel, err = m.localRel(src); err != nil {
			return "", err
		}
	}
	dir := m.ImageDir(digest)
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir, nil
	}
	if err := os.MkdirAll(m.imagesDir, 0o700); err != nil {
		return "", fmt.Errorf("creating image directory: %w", err)
	}
	rc, err := m.open(ctx, src, rel)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	// Every read watches ctx: an image that never ends (a slow server,
	// an endless file) gives up with the operation's timeout.
	var in io.Reader = ctxReader{ctx: ctx, r: rc}
	tmp, err := os.MkdirTemp(m.imagesDir, ".tmp-"+digest[:12]+"-")
	if err != nil {
		return "", fmt.Errorf("creating image directory: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(tmp)
		}
	}()
	h := sha256.New()
	tee := io.TeeReader(in, h)
	uerr := unpack(ctx, tee, tmp, m.imageLimit)
	if errors.Is(uerr, ErrImageTooLarge) {
		// Refused whatever its digest: reading the rest could take long.
		return "", provision.Permanentf("%s: %w", src, uerr)
	}
	if _, err := io.Copy(io.Discard, tee); err != nil && uerr == nil {
		uerr = fmt.Errorf("reading image: %w", err)
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		// The error does not say what the digest is: that would tell
		// the user something of what the node read.
		m.log.Warn().Str("image", src).Str("sha256", got).Str("want", digest).Msg("image digest mismatch")
		return "", provision.Permanentf("%w: image %s does not have sha256 %s", ErrDigestMismatch, src, digest)
	}
	if uerr != nil {
		var perr *provision.Error
		if errors.As(uerr, &perr) {
			return "", uerr
		}
		return "", provision.Permanentf("%w: %s: %w", ErrBadImage, src, uerr)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if st, serr := os.Stat(dir); serr == nil && st.IsDir() {
			return dir, nil // another provision unpacked it meanwhile
		}
		return "", fmt.Errorf("installing image %s: %w", digest, err)
	}
	keep = true
	m.log.Debug().Str("digest", digest).Str("image", src).Msg("image unpacked")
	return dir, nil
}

// open opens the local image src, at rel below the local image directory
// (see localRel), or, when rel is "", starts the download of src.
func (m *Manager) open(ctx context.Context, src, rel string) (io.ReadCloser, error) {
	if rel != "" {
		return m.openLocal(src, rel)
	}
	resp, err := m.download(ctx, src)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// openLocal opens the local image src, at rel below the node's local image
// directory (Options.LocalImages; see localRel). It is opened through an
// os.Root of that directory, so neither a path outside nor a symlink inside that
// leads outside reaches another file of the node: a user would otherwise
// learn from the signed error whether any path exists, is a directory, or
// has a given sha256. The image must be a regular file: it is opened
// without blocking (a FIFO would block the open itself) and refused when
// it is a device, a FIFO, a socket or a directory, which would never end
// or never start. Messages name only src, never the directory.
func (m *Manager) openLocal(src, rel string) (io.ReadCloser, error) {
	root, err := os.OpenRoot(m.local)
	if err != nil {
		m.log.Warn().Err(err).Str("image", src).Msg("local image directory unusable")
		var perr *fs.PathError
		if errors.As(err, &perr) {
			err = perr.Err // without the directory's name
		}
		return nil, fmt.Errorf("opening image %s: the node's local image directory: %w", src, err)
	}
	defer root.Close() // f stays valid
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		var errno syscall.Errno
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, provision.Permanentf("%w: %s", ErrImageNotFound, src)
		case !errors.As(err, &errno):
			// Not a system call's error: os.Root refused a path that
			// leaves the directory (through a symlink).
			return nil, errOutside(src)
		case errno == syscall.ELOOP || errno == syscall.ENOTDIR:
			return nil, provision.Permanentf("%w: %s: %w", ErrBadImage, src, errno)
		}
		return nil, fmt.Errorf("opening image %s: %w", src, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening image %s: %w", src, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, provision.Permanentf("%w: %s is not a regular file (%s)", ErrBadImage, src, st.Mode().Type())
	}
	return f, nil
}

// localRel returns the local image path src relative to the node's local
// image directory, or the permanent error of a path the node does not
// serve: local images are off, or src is not below the directory.
func (m *Manager) localRel(src string) (string, error) {
	if m.local == "" {
		return "", provision.Permanentf("%w: %s: local image paths are not served by this node (provisiond run --local-images)", ErrBadImage, src)
	}
	if !filepath.IsAbs(src) {
		return "", errOutside(src)
	}
	rel, err := filepath.Rel(m.local, filepath.Clean(src))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", errOutside(src)
	}
	return rel, nil
}

func errOutside(src string) error {
	return provision.Permanentf("%w: %s is not below the node's local image directory", ErrBadImage, src)
}

// ctxReader is a Reader that fails with ctx's error once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// imageLimit bounds what an image unpacks to: bytes of file content and
// entries.
type imageLimit struct {
	bytes   int64
	entries int
}

// unpack extracts a rootfs tarball (plain or gzip) into dir. Every path is
// resolved through an os.Root, so no entry (nor a symlink planted by an
// earlier one) can write outside dir. Device nodes are skipped: /dev of a
// container is a fresh tmpfs. Past limit, it stops with ErrImageTooLarge.
func unpack(ctx context.Context, r io.Reader, dir string, limit imageLimit) error {
	br := bufio.NewReader(r)
	var in io.Reader = br
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("reading gzip: %w", err)
		}
		defer gz.Close()
		in = gz
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(in)
	left := limit.bytes // file content still allowed
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		if n == limit.entries {
			return fmt.Errorf("%w: more than %d entries", ErrImageTooLarge, limit.entries)
		}
		if hdr.Typeflag == tar.TypeReg {
			if hdr.Size > left {
				return fmt.Errorf("%w: more than %d bytes of files (at %q)", ErrImageTooLarge, limit.bytes, hdr.Name)
			}
			left -= hdr.Size
		}
		if err := layer.WriteEntry(root, hdr, tr); err != nil {
			return fmt.Errorf("extracting %q: %w", hdr.Name, err)
		}
	}
}
