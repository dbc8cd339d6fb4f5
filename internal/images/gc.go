package images

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/internal/content"
	"github.com/edgeprov/provisiond/internal/registry"
)

// DefaultGrace is how long a blob or layer is kept after it was stored
// even when nothing references it: a just-pulled image's container may
// not have started, nor its record been read by the sweep.
const DefaultGrace = time.Hour

// SweepResult says what a sweep removed.
type SweepResult struct {
	// Blobs are the digests of the blobs removed.
	Blobs []string
	// Layers are the digests of the unpacked layers removed.
	Layers []string
	// Temporary counts interrupted downloads and unpacks removed.
	Temporary int
	// Bytes is what the removed files allocated on disk.
	Bytes int64
}

// Sweep removes the blobs and unpacked layers that no image keep reports
// (nor an imported image, see Import) reaches, that inUse does not name
// (layers mounted by containers now), and that were stored more than
// grace ago; and interrupted downloads and unpacks older than grace that
// no pull of this process is running. No pull runs during a sweep: what
// a pull stored before its image is complete is therefore never taken.
func (s *Store) Sweep(ctx context.Context, keep func(digest string) bool, inUse map[string]bool, grace time.Duration) (SweepResult, error) {
	s.gc.Lock()
	defer s.gc.Unlock()
	var res SweepResult
	blobs, err := s.blobs.List()
	if err != nil {
		return res, fmt.Errorf("listing blobs: %w", err)
	}
	pins, err := s.pins()
	if err != nil {
		return res, err
	}
	live := map[string]bool{}
	var tops []string
	for _, b := range blobs {
		if keep(b.Digest) || pins[b.Digest] {
			tops = append(tops, b.Digest)
		}
	}
	for _, t := range tops {
		// A top that cannot be read keeps what it may reach: refuse to
		// delete on a doubt.
		if err := s.reach(t, live, 0); err != nil {
			return res, fmt.Errorf("reading image %s (nothing removed): %w", t, err)
		}
	}
	cutoff := s.now().Add(-grace)
	var errs []error
	for _, b := range blobs {
		if live[b.Digest] || b.ModTime.After(cutoff) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		res.Bytes += allocated(s.blobs.Path(b.Digest))
		if err := s.blobs.Remove(b.Digest); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Blobs = append(res.Blobs, b.Digest)
	}
	downloads, err := s.blobs.Downloads()
	if err != nil {
		errs = append(errs, err)
	}
	for _, d := range downloads {
		if d.ModTime.After(cutoff) || s.blobs.InFlight(d.Digest) {
			continue
		}
		res.Bytes += d.Size
		if err := s.blobs.Remove(d.Digest); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Temporary++
	}
	layers, err := os.ReadDir(s.layersDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range layers {
		d := e.Name()
		if content.CheckDigest(d) != nil || live[d] || inUse[d] {
			continue
		}
		if m, ok, err := s.readMeta(d); err != nil || !ok || m.Unpacked.After(cutoff) {
			continue
		}
		n, moved, err := s.removeLayer(d, true)
		if err != nil {
			errs = append(errs, err)
		}
		if moved {
			res.Bytes += n
			res.Layers = append(res.Layers, d)
		}
	}
	tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(s.layersDir()), "tmp-*"))
	for _, t := range tmps {
		// No unpack runs during a sweep (pulls hold s.gc).
		res.Bytes += allocated(t)
		if err := os.RemoveAll(t); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Temporary++
	}
	if len(res.Blobs)+len(res.Layers)+res.Temporary > 0 {
		s.log.Info().Int("blobs", len(res.Blobs)).Int("layers", len(res.Layers)).Int("temporary", res.Temporary).
			Int64("bytes", res.Bytes).Msg("unused image content removed")
	}
	return res, errors.Join(errs...)
}

// discard removes the blobs and unpacked layers of digests that no
// stored image reaches: what a pull that failed for good stored. Every
// stored manifest or index is an image (a pull stores them last, once
// the image is complete; Import stores them pinned), so what one
// reaches stays whether a record references it or not: another image's
// shared base layer, a running container's layers. It waits for the
// pulls under way to end, like Sweep. Downloads cut short are not
// touched: a failure for good removed its own, and another pull's may
// resume.
func (s *Store) discard(digests []string) error {
	s.gc.Lock()
	defer s.gc.Unlock()
	blobs, err := s.blobs.List()
	if err != nil {
		return fmt.Errorf("listing blobs (nothing removed): %w", err)
	}
	reached := map[string]bool{}
	for _, b := range blobs {
		if b.Size > registry.MaxManifestSize || reached[b.Digest] {
			continue
		}
		top, err := s.isImage(b.Digest)
		if err != nil {
			return fmt.Errorf("reading blob %s (nothing removed): %w", b.Digest, err)
		}
		if top {
			if err := s.reach(b.Digest, reached, 0); err != nil {
				return fmt.Errorf("reading image %s (nothing removed): %w", b.Digest, err)
			}
		}
	}
	var errs []error
	for _, d := range digests {
		if reached[d] || content.CheckDigest(d) != nil {
			continue
		}
		if s.blobs.Has(d) {
			if err := s.blobs.Remove(d); err != nil {
				errs = append(errs, err)
			}
		}
		if _, _, err := s.removeLayer(d, false); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeLayer removes the unpacked layer d: renamed away first, so a
// later pull never finds it half gone, then deleted. moved says whether
// it was renamed away (a layer that is not there is not: the error wraps
// fs.ErrNotExist); n is what it allocated on disk, measured (a walk of
// its files) only when size is set.
func (s *Store) removeLayer(d string, size bool) (n int64, moved bool, err error) {
	gone := filepath.Join(filepath.Dir(s.layersDir()), "tmp-gc-"+d)
	if err := os.Rename(filepath.Join(s.layersDir(), d), gone); err != nil {
		return 0, false, fmt.Errorf("removing layer %s: %w", d, err)
	}
	if size {
		n = allocated(gone)
	}
	if err := os.RemoveAll(gone); err != nil {
		return n, true, fmt.Errorf("removing layer %s: %w", d, err)
	}
	return n, true, nil
}

// isImage reports whether the stored blob of digest is a manifest or an
// index (not a config or a layer). A blob that changed on disk or is
// gone is none.
func (s *Store) isImage(digest string) (bool, error) {
	b, err := s.blobs.ReadVerified(digest, registry.MaxManifestSize)
	if errors.Is(err, content.ErrTampered) || errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if len(b) == 0 || b[0] != '{' {
		return false, nil
	}
	if isIndex(b) {
		return true, nil
	}
	m, err := v1.ParseManifest(strings.NewReader(string(b)))
	return err == nil && m.Config.Digest.Hex != "", nil
}

// reach marks in live the blobs and layers the stored image digest
// reaches: itself, an index's manifests, a manifest's config and layers.
// A blob not in the store reaches nothing.
func (s *Store) reach(digest string, live map[string]bool, depth int) error {
	if live[digest] || !s.blobs.Has(digest) {
		return nil
	}
	live[digest] = true
	b, err := s.blobs.ReadVerified(digest, registry.MaxManifestSize)
	if errors.Is(err, content.ErrTampered) || errors.Is(err, fs.ErrNotExist) {
		return nil // gone: nothing to keep
	}
	if err != nil {
		return err
	}
	if isIndex(b) {
		if depth > 0 {
			return nil
		}
		idx, err := v1.ParseIndexManifest(strings.NewReader(string(b)))
		if err != nil {
			return nil // not an image: reaches nothing
		}
		for _, m := range idx.Manifests {
			if err := s.reach(m.Digest.Hex, live, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	m, err := v1.ParseManifest(strings.NewReader(string(b)))
	if err != nil {
		return nil
	}
	live[m.Config.Digest.Hex] = true
	for _, l := range m.Layers {
		live[l.Digest.Hex] = true
	}
	return nil
}

// pinsDir holds an empty file per imported image: the operator put it
// there, so it stays until removed with image prune --imported.
func (s *Store) pinsDir() string { return filepath.Join(s.dir, "blobs", "pins") }

func (s *Store) pins() (map[string]bool, error) {
	es, err := os.ReadDir(s.pinsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing imported images: %w", err)
	}
	out := map[string]bool{}
	for _, e := range es {
		if content.CheckDigest(e.Name()) == nil {
			out[e.Name()] = true
		}
	}
	return out, nil
}

// Pin keeps the image digest from sweeps (an imported image).
func (s *Store) Pin(digest string) error {
	if err := content.CheckDigest(digest); err != nil {
		return err
	}
	if err := os.MkdirAll(s.pinsDir(), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.pinsDir(), digest), nil, 0o600); err != nil {
		return err
	}
	return content.SyncDir(s.pinsDir())
}

// Unpin lets sweeps collect the image digest once nothing references it.
func (s *Store) Unpin(digest string) error {
	if err := content.CheckDigest(digest); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(s.pinsDir(), digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Info describes a stored image for image ls.
type Info struct {
	// Digest is the image's (a manifest's or an index's) sha256.
	Digest string `json:"digest"`
	// Index tells an index from a manifest.
	Index bool `json:"index,omitempty"`
	// Blobs is the bytes of the blobs it reaches that are stored.
	Blobs int64 `json:"blob_bytes"`
	// Unpacked is the file content of its unpacked layers.
	Unpacked int64 `json:"unpacked_bytes"`
	// Layers counts its layers unpacked on this node.
	Layers int `json:"layers"`
	// Imported tells an image kept by image import.
	Imported bool `json:"imported,omitempty"`
	// Stored is when its top blob was stored.
	Stored time.Time `json:"stored"`
}

// List returns the stored images: the stored manifests and indexes no
// stored index lists.
func (s *Store) List() ([]Info, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	blobs, err := s.blobs.List()
	if err != nil {
		return nil, err
	}
	pins, err := s.pins()
	if err != nil {
		return nil, err
	}
	sizes := map[string]content.Blob{}
	kind := map[string]string{} // digest → "index", "manifest"
	children := map[string]bool{}
	for _, b := range blobs {
		sizes[b.Digest] = b
		if b.Size > registry.MaxManifestSize {
			continue
		}
		body, err := os.ReadFile(s.blobs.Path(b.Digest))
		if err != nil {
			continue
		}
		if isIndex(body) {
			kind[b.Digest] = "index"
			if idx, err := v1.ParseIndexManifest(strings.NewReader(string(body))); err == nil {
				for _, m := range idx.Manifests {
					children[m.Digest.Hex] = true
				}
			}
		} else if m, err := v1.ParseManifest(strings.NewReader(string(body))); err == nil && m.Config.Digest.Hex != "" {
			kind[b.Digest] = "manifest"
		}
	}
	var out []Info
	for d, k := range kind {
		if children[d] {
			continue
		}
		live := map[string]bool{}
		if err := s.reach(d, live, 0); err != nil {
			return nil, err
		}
		info := Info{Digest: d, Index: k == "index", Imported: pins[d], Stored: sizes[d].ModTime.UTC()}
		for r := range live {
			info.Blobs += sizes[r].Size
			if m, ok, _ := s.readMeta(r); ok {
				info.Unpacked += m.Bytes
				info.Layers++
			}
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Digest, b.Digest) })
	return out, nil
}

// allocated returns the bytes allocated on disk to path and everything
// below it.
func allocated(path string) int64 {
	var n int64
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			n += st.Blocks * 512
		}
		return nil
	})
	return n
}
