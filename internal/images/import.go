package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/edgeprov/provisiond/internal/content"
	"github.com/edgeprov/provisiond/internal/registry"
)

// Imported is an image Import stored.
type Imported struct {
	// Digest is the digest to sign: REGISTRY/REPO@sha256:<Digest> runs it
	// on this node whatever REGISTRY/REPO say.
	Digest string `json:"digest"`
	// Name is the name the archive gives it, if any.
	Name string `json:"name,omitempty"`
}

// source reads the blobs of an archive.
type source interface {
	// open opens the blob of digest (hex).
	open(digest string) (io.ReadCloser, error)
}

// Import stores the images of file: an OCI image layout (a directory, or
// a tar of one, as `docker save` of Docker 25+ writes) or a `docker save`
// archive of one image (manifest.json). Every blob is checked against its
// digest as it is copied. Each image is pinned: it stays until image
// prune --imported unpins it and nothing references it. Layers are
// unpacked when a container first uses them.
func (s *Store) Import(ctx context.Context, file string) ([]Imported, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return s.importLayout(ctx, dirSource{root: file})
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	src := &tarSource{f: f}
	if _, err := src.find("index.json"); err == nil {
		return s.importLayout(ctx, src)
	}
	return s.importDockerSave(ctx, file)
}

func (s *Store) importLayout(ctx context.Context, src source) ([]Imported, error) {
	rc, err := src.open("index.json")
	if err != nil {
		return nil, fmt.Errorf("reading index.json: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(rc, registry.MaxManifestSize+1))
	rc.Close()
	if err != nil {
		return nil, err
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%w: index.json: %w", ErrBadManifest, err)
	}
	var out []Imported
	for _, d := range idx.Manifests {
		if d.Digest.Algorithm != "sha256" || content.CheckDigest(d.Digest.Hex) != nil {
			return out, fmt.Errorf("%w: index.json names a digest that is not sha256", ErrBadManifest)
		}
		// Pinned first: a sweep meanwhile keeps what it reaches.
		if err := s.Pin(d.Digest.Hex); err != nil {
			return out, err
		}
		if err := s.importManifest(ctx, src, d, 0); err != nil {
			return out, fmt.Errorf("importing sha256:%s: %w", d.Digest.Hex, err)
		}
		out = append(out, Imported{Digest: d.Digest.Hex, Name: d.Annotations["org.opencontainers.image.ref.name"]})
	}
	return out, nil
}

// importManifest copies manifest or index d and what it reaches, the
// manifest last. An index's manifests absent from the archive (other
// platforms) are skipped.
func (s *Store) importManifest(ctx context.Context, src source, d v1.Descriptor, depth int) error {
	body, err := s.copyBlob(ctx, src, d.Digest.Hex, d.Size, registry.MaxManifestSize, true)
	if err != nil {
		return err
	}
	if isIndex(body) {
		if depth > 0 {
			return fmt.Errorf("%w: an index inside an index", ErrBadManifest)
		}
		idx, err := v1.ParseIndexManifest(bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadManifest, err)
		}
		for _, m := range idx.Manifests {
			err := s.importManifest(ctx, src, m, depth+1)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
		}
	} else {
		m, err := v1.ParseManifest(bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadManifest, err)
		}
		if _, err := s.copyBlob(ctx, src, m.Config.Digest.Hex, m.Config.Size, MaxConfigSize, false); err != nil {
			return err
		}
		for _, l := range m.Layers {
			if _, err := s.copyBlob(ctx, src, l.Digest.Hex, l.Size, s.limit.Bytes, false); err != nil {
				return err
			}
		}
	}
	return s.blobs.Put(d.Digest.Hex, body)
}

// copyBlob copies blob digest of size bytes from src into the store,
// except a manifest (read, its digest checked, and returned: it is stored
// last by the caller).
func (s *Store) copyBlob(ctx context.Context, src source, digest string, size, max int64, manifest bool) ([]byte, error) {
	if content.CheckDigest(digest) != nil {
		return nil, fmt.Errorf("%w: a digest that is not sha256", ErrBadManifest)
	}
	if size > max {
		return nil, fmt.Errorf("%w: blob sha256:%s is %d bytes, more than %d", ErrTooLarge, digest, size, max)
	}
	if manifest {
		rc, err := src.open(path.Join("blobs/sha256", digest))
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, max+1))
		if err != nil {
			return nil, err
		}
		if int64(len(b)) != size {
			return nil, fmt.Errorf("%w: manifest sha256:%s is not %d bytes", content.ErrSizeMismatch, digest, size)
		}
		if err := checkSum(b, digest); err != nil {
			return nil, err
		}
		return b, nil
	}
	err := s.blobs.Ingest(ctx, digest, size, func(context.Context, int64) (io.ReadCloser, bool, error) {
		rc, err := src.open(path.Join("blobs/sha256", digest))
		return rc, false, err
	})
	return nil, err
}

func checkSum(b []byte, digest string) error {
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != digest {
		return fmt.Errorf("%w: blob is not sha256:%s", content.ErrDigestMismatch, digest)
	}
	return nil
}

// importDockerSave stores the one image of a `docker save` archive. Its
// layers are stored gzip-compressed as go-containerregistry compresses
// them, so its digest is the one Import prints, not a registry's.
func (s *Store) importDockerSave(ctx context.Context, file string) ([]Imported, error) {
	img, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is neither an OCI layout nor a docker save archive of one image: %w", ErrBadManifest, file, err)
	}
	dg, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadManifest, err)
	}
	if err := s.Pin(dg.Hex); err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadManifest, err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		size, err := l.Size()
		if err != nil {
			return nil, err
		}
		if size > s.limit.Bytes {
			return nil, fmt.Errorf("%w: layer sha256:%s is %d bytes, more than %d", ErrTooLarge, d.Hex, size, s.limit.Bytes)
		}
		err = s.blobs.Ingest(ctx, d.Hex, size, func(context.Context, int64) (io.ReadCloser, bool, error) {
			rc, err := l.Compressed()
			return rc, false, err
		})
		if err != nil {
			return nil, err
		}
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	cd, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	if err := s.blobs.Put(cd.Hex, cfg); err != nil {
		return nil, err
	}
	man, err := img.RawManifest()
	if err != nil {
		return nil, err
	}
	if err := s.blobs.Put(dg.Hex, man); err != nil {
		return nil, err
	}
	return []Imported{{Digest: dg.Hex}}, nil
}

// dirSource reads an OCI layout directory, confined to it.
type dirSource struct{ root string }

func (d dirSource) open(name string) (io.ReadCloser, error) {
	r, err := os.OpenRoot(d.root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Open(filepath.FromSlash(name))
}

// tarSource reads an OCI layout tar, scanning it for each blob.
type tarSource struct{ f *os.File }

// find positions a tar reader at the entry name.
func (t *tarSource) find(name string) (*tar.Reader, error) {
	if _, err := t.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	tr := tar.NewReader(t.f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w", name, os.ErrNotExist)
		}
		if err != nil {
			return nil, err
		}
		if path.Clean(hdr.Name) == name && hdr.Typeflag == tar.TypeReg {
			return tr, nil
		}
	}
}

func (t *tarSource) open(name string) (io.ReadCloser, error) {
	tr, err := t.find(name)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(tr), nil
}
