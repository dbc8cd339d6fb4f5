// Package images keeps the node's OCI images: it pulls an image pinned by
// digest from a registry (internal/registry) into the content store
// (internal/content) and unpacks each layer once (internal/layer) into a
// directory every image and container using it shares as an overlay lower
// layer.
//
// Layout under the data directory:
//
//	blobs/sha256/<hex>          manifests, indexes, configs, compressed layers
//	blobs/ingest/<hex>          downloads under way or interrupted
//	layers/sha256/<hex>/fs      a layer unpacked (hex: its compressed blob's digest)
//	layers/sha256/<hex>/meta.json  its size, entries and diff ID
//	layers/tmp-*                a layer being unpacked
//
// An image is present when its top manifest (the digest the user signed)
// is in the store: it is written last, after every layer is unpacked, so
// a pull that fails leaves no image behind (layers it completed are valid
// content and stay until the garbage collector finds them unreferenced).
// The node never resolves a tag and asks the store first, so an image
// imported from an archive (Import) is used without any registry.
package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/internal/content"
	"github.com/edgeprov/provisiond/internal/layer"
	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/provision"
)

// Limits of an image.
const (
	// MaxLayers bounds an image's layers: each is an overlay lower
	// directory, and their paths must fit overlay's mount options.
	MaxLayers = 48
	// MaxConfigSize bounds an image's configuration blob.
	MaxConfigSize = 8 << 20
)

// Sentinel errors of the image store, besides those of registry, content
// and layer, which its errors wrap.
var (
	// ErrNoPlatform: an index without a manifest for the node's platform.
	ErrNoPlatform = errors.New("images: no manifest for this platform")
	// ErrBadManifest: a manifest, index or config that does not parse or
	// is not an image the node runs.
	ErrBadManifest = errors.New("images: bad manifest")
	// ErrTooLarge: an image past the size or layer limits.
	ErrTooLarge = errors.New("images: image too large")
	// ErrDiffID: a layer that unpacks to another tar than its config
	// says.
	ErrDiffID = errors.New("images: layer diff ID mismatch")
)

// Options configures a Store.
type Options struct {
	// Dir is the data directory holding blobs/ and layers/. Required.
	Dir string
	// Registry fetches what the store lacks. Nil: the store only holds
	// what was imported, and a pull of anything else fails with
	// registry.ErrUnreachable.
	Registry *registry.Client
	// Limit bounds an image: its compressed layers' bytes and its
	// unpacked file content (each against Limit.Bytes), and its tar
	// entries. Required.
	Limit layer.Limit
	// Platform is the platform picked from an index. Default linux and
	// runtime.GOARCH.
	Platform v1.Platform
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Log receives debug messages. Default zerolog.Nop().
	Log zerolog.Logger
}

// Store is the node's image store. It is safe for concurrent use: pulls
// of one image, or of images sharing layers, fetch and unpack each blob
// once.
type Store struct {
	dir      string
	blobs    *content.Store
	reg      *registry.Client
	limit    layer.Limit
	platform v1.Platform
	now      func() time.Time
	log      zerolog.Logger

	// gc is held for reading by pulls and for writing by a sweep, so a
	// sweep never removes what a pull is about to use.
	gc sync.RWMutex

	mu     sync.Mutex
	layers map[string]*unpackCall
}

type unpackCall struct {
	done chan struct{}
	err  error
}

// New returns the store in opts.Dir. It panics without Dir or a limit.
func New(opts Options) *Store {
	if opts.Dir == "" || opts.Limit.Bytes <= 0 || opts.Limit.Entries <= 0 {
		panic("images: Options.Dir and Options.Limit are required")
	}
	if opts.Platform.OS == "" {
		opts.Platform = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{
		dir:      opts.Dir,
		blobs:    content.New(filepath.Join(opts.Dir, "blobs")),
		reg:      opts.Registry,
		limit:    opts.Limit,
		platform: opts.Platform,
		now:      opts.Now,
		log:      opts.Log.With().Str("component", "images").Logger(),
		layers:   map[string]*unpackCall{},
	}
}

// Blobs returns the store's content store.
func (s *Store) Blobs() *content.Store { return s.blobs }

// LayerDir returns the overlay lower directory of the layer whose
// compressed blob has digest.
func (s *Store) LayerDir(digest string) string {
	return filepath.Join(s.layersDir(), digest, "fs")
}

func (s *Store) layersDir() string { return filepath.Join(s.dir, "layers", "sha256") }

// Image is an image ready to run.
type Image struct {
	// Digest is the digest the user signed (a manifest or an index).
	Digest string
	// Manifest is the digest of the manifest for this platform (Digest
	// itself unless Digest is an index).
	Manifest string
	// Config is the digest of the image's configuration.
	Config string
	// Layers are the compressed layer digests, base first.
	Layers []string
}

// Lowers returns the layer directories in overlay's lowerdir order: the
// top layer first.
func (s *Store) Lowers(img *Image) []string {
	out := make([]string, 0, len(img.Layers))
	for i := len(img.Layers) - 1; i >= 0; i-- {
		out = append(out, s.LayerDir(img.Layers[i]))
	}
	return out
}

// manifest is a manifest or an index read from the store or a registry.
type manifest struct {
	body  []byte
	fresh bool // fetched now; stored when the image is complete
}

// Pull makes the image of ref present and unpacked, fetching from the
// registry (mirrors first) only what the store lacks. A pull that fails
// for good (anything but a registry that is down or overloaded, or ctx
// ending) removes what it stored that no stored image reaches (see
// discard): a failed image leaves nothing behind, while a temporary
// failure keeps its partial download for the retry to resume.
func (s *Store) Pull(ctx context.Context, ref provision.ImageRef) (*Image, error) {
	var touched []string
	img, err := s.pull(ctx, ref, &touched)
	if err != nil && ctx.Err() == nil && !registry.Temporary(err) && len(touched) > 0 {
		if derr := s.discard(touched); derr != nil {
			s.log.Warn().Err(derr).Str("image", ref.String()).Msg("removing what a failed pull stored")
		}
	}
	return img, err
}

// pull is Pull; it appends to touched the digests of the blobs and
// layers the image needs that it looked for, stored or not.
func (s *Store) pull(ctx context.Context, ref provision.ImageRef, touched *[]string) (*Image, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	var repo *registry.Repo
	if s.reg != nil {
		repo = s.reg.Repo(ref)
	}
	top, err := s.manifest(ctx, repo, ref.Digest)
	if err != nil {
		return nil, err
	}
	img := &Image{Digest: ref.Digest, Manifest: ref.Digest}
	var toStore []struct {
		digest string
		body   []byte
	}
	if top.fresh {
		toStore = append(toStore, struct {
			digest string
			body   []byte
		}{ref.Digest, top.body})
	}
	man := top
	if isIndex(top.body) {
		child, err := s.pick(ref, top.body)
		if err != nil {
			return nil, err
		}
		if man, err = s.manifest(ctx, repo, child); err != nil {
			return nil, err
		}
		if isIndex(man.body) {
			return nil, fmt.Errorf("%w: %s: an index inside an index", ErrBadManifest, ref)
		}
		img.Manifest = child
		if man.fresh {
			// Stored before the index, which marks the image present.
			toStore = append([]struct {
				digest string
				body   []byte
			}{{child, man.body}}, toStore...)
		}
	}
	m, err := parseManifest(ref, man.body)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, l := range m.Layers {
		total += l.Size
	}
	if total > s.limit.Bytes {
		return nil, fmt.Errorf("%w: %s: its layers are %d compressed bytes, more than %d", ErrTooLarge, ref, total, s.limit.Bytes)
	}
	img.Config = m.Config.Digest.Hex
	*touched = append(*touched, img.Config)
	for _, l := range m.Layers {
		*touched = append(*touched, l.Digest.Hex)
	}
	if err := s.ingest(ctx, repo, m.Config.Digest.Hex, m.Config.Size, MaxConfigSize); err != nil {
		return nil, err
	}
	cb, err := s.blobs.ReadVerified(img.Config, MaxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("reading config of %s: %w", ref, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cb))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: config: %w", ErrBadManifest, ref, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("%w: %s: %d layers but %d diff IDs", ErrBadManifest, ref, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	left := s.limit
	for i, l := range m.Layers {
		st, err := s.layer(ctx, repo, l, cfg.RootFS.DiffIDs[i].Hex, left)
		if err != nil {
			return nil, fmt.Errorf("layer %d of %s: %w", i, ref, err)
		}
		left.Bytes -= st.Bytes
		left.Entries -= st.Entries
		if left.Bytes < 0 || left.Entries < 0 {
			return nil, fmt.Errorf("%w: %s unpacks to more than %d bytes or %d entries", ErrTooLarge, ref, s.limit.Bytes, s.limit.Entries)
		}
		img.Layers = append(img.Layers, l.Digest.Hex)
	}
	for _, b := range toStore {
		if err := s.blobs.Put(b.digest, b.body); err != nil {
			return nil, fmt.Errorf("storing manifest of %s: %w", ref, err)
		}
	}
	return img, nil
}

// manifest returns the manifest or index of digest from the store, or
// fetches it (not stored yet).
func (s *Store) manifest(ctx context.Context, repo *registry.Repo, digest string) (manifest, error) {
	if s.blobs.Has(digest) {
		b, err := s.blobs.ReadVerified(digest, registry.MaxManifestSize)
		if err == nil {
			return manifest{body: b}, nil
		}
		if !errors.Is(err, content.ErrTampered) {
			return manifest{}, err
		}
		s.log.Warn().Err(err).Str("digest", digest).Msg("stored manifest changed on disk, fetching it again")
	}
	if repo == nil {
		return manifest{}, fmt.Errorf("%w: manifest sha256:%s is not in the store and no registry is configured", registry.ErrUnreachable, digest)
	}
	m, err := repo.Manifest(ctx, digest)
	if err != nil {
		return manifest{}, err
	}
	return manifest{body: m.Body, fresh: true}, nil
}

// isIndex tells an index (it lists manifests) from a manifest.
func isIndex(b []byte) bool {
	var probe struct {
		Manifests json.RawMessage `json:"manifests"`
	}
	return json.Unmarshal(b, &probe) == nil && probe.Manifests != nil
}

// pick returns the digest of the index's manifest for the node's platform.
func (s *Store) pick(ref provision.ImageRef, body []byte) (string, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("%w: %s: index: %w", ErrBadManifest, ref, err)
	}
	for _, d := range idx.Manifests {
		if d.Platform == nil || !d.Platform.Satisfies(s.platform) {
			continue
		}
		if d.Digest.Algorithm != "sha256" || content.CheckDigest(d.Digest.Hex) != nil {
			return "", fmt.Errorf("%w: %s: a manifest digest that is not sha256", ErrBadManifest, ref)
		}
		return d.Digest.Hex, nil
	}
	return "", fmt.Errorf("%w: %s has no manifest for %s/%s", ErrNoPlatform, ref, s.platform.OS, s.platform.Architecture)
}

// parseManifest parses an image manifest and checks that the node can run
// it: an image config, tar or tar+gzip layers, sha256 digests.
func parseManifest(ref provision.ImageRef, body []byte) (*v1.Manifest, error) {
	m, err := v1.ParseManifest(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: manifest: %w", ErrBadManifest, ref, err)
	}
	switch m.Config.MediaType {
	case "application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json":
	default:
		return nil, fmt.Errorf("%w: %s: config of media type %q is not a container image (an artifact?)", registry.ErrMediaType, ref, m.Config.MediaType)
	}
	if len(m.Layers) > MaxLayers {
		return nil, fmt.Errorf("%w: %s has %d layers, more than %d", ErrTooLarge, ref, len(m.Layers), MaxLayers)
	}
	if len(m.Layers) == 0 {
		return nil, fmt.Errorf("%w: %s has no layers", ErrBadManifest, ref)
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if d.Digest.Algorithm != "sha256" || content.CheckDigest(d.Digest.Hex) != nil || d.Size < 0 {
			return nil, fmt.Errorf("%w: %s: a descriptor that is not sha256 or has a negative size", ErrBadManifest, ref)
		}
	}
	for _, l := range m.Layers {
		switch l.MediaType {
		case "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar",
			"application/vnd.oci.image.layer.v1.tar+zstd",
			"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar",
			"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "application/vnd.oci.image.layer.nondistributable.v1.tar",
			"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		default:
			return nil, fmt.Errorf("%w: %s: layer sha256:%s of media type %q (tar, tar+gzip and tar+zstd layers only)", registry.ErrMediaType, ref, l.Digest.Hex, l.MediaType)
		}
	}
	return m, nil
}

// ingest makes sure blob digest of size bytes is stored.
func (s *Store) ingest(ctx context.Context, repo *registry.Repo, digest string, size, max int64) error {
	if size > max {
		return fmt.Errorf("%w: blob sha256:%s is %d bytes, more than %d", ErrTooLarge, digest, size, max)
	}
	if s.blobs.Has(digest) {
		return nil
	}
	if repo == nil {
		return fmt.Errorf("%w: blob sha256:%s is not in the store and no registry is configured", registry.ErrUnreachable, digest)
	}
	return s.blobs.Ingest(ctx, digest, size, func(ctx context.Context, off int64) (io.ReadCloser, bool, error) {
		return repo.Blob(ctx, digest, off)
	})
}

// layerMeta is what meta.json beside an unpacked layer holds.
type layerMeta struct {
	layer.Stats
	// Unpacked is when it was unpacked.
	Unpacked time.Time `json:"unpacked"`
}

// readMeta reads the meta.json of the unpacked layer digest; ok is false
// when the layer is not unpacked.
func (s *Store) readMeta(digest string) (layerMeta, bool, error) {
	b, err := os.ReadFile(filepath.Join(s.layersDir(), digest, "meta.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return layerMeta{}, false, nil
	}
	if err != nil {
		return layerMeta{}, false, err
	}
	var m layerMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return layerMeta{}, false, fmt.Errorf("layer %s: meta.json: %w", digest, err)
	}
	return m, true, nil
}

// layer makes sure layer d is stored and unpacked, once however many
// pulls ask for it at the same time, and returns what it unpacked to.
func (s *Store) layer(ctx context.Context, repo *registry.Repo, d v1.Descriptor, diffID string, left layer.Limit) (layer.Stats, error) {
	digest := d.Digest.Hex
	for {
		if m, ok, err := s.readMeta(digest); err != nil || ok {
			return m.Stats, err
		}
		s.mu.Lock()
		c, ok := s.layers[digest]
		if !ok {
			c = &unpackCall{done: make(chan struct{})}
			s.layers[digest] = c
			s.mu.Unlock()
			var st layer.Stats
			st, c.err = s.unpackLayer(ctx, repo, d, diffID, left)
			s.mu.Lock()
			delete(s.layers, digest)
			s.mu.Unlock()
			close(c.done)
			return st, c.err
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return layer.Stats{}, ctx.Err()
		case <-c.done:
		}
		if c.err != nil {
			if ctx.Err() != nil {
				return layer.Stats{}, ctx.Err()
			}
			if !errors.Is(c.err, context.Canceled) && !errors.Is(c.err, context.DeadlineExceeded) {
				return layer.Stats{}, c.err
			}
		}
	}
}

// unpackLayer fetches layer d and unpacks it into a temporary directory
// renamed into place once its blob's digest and its diff ID are checked.
// A layer downloaded from its start is unpacked as it arrives (the bytes
// go to the store, which checks their digest, and to the unpacker at
// once), and its compressed blob is not kept: the unpacked layer is what
// the node keeps, so its bytes are forced to disk once, not twice (as
// containerd's discard_unpacked_layers). A stored or resumed blob is
// unpacked from the store, hashed again as it is read.
func (s *Store) unpackLayer(ctx context.Context, repo *registry.Repo, d v1.Descriptor, diffID string, left layer.Limit) (layer.Stats, error) {
	digest := d.Digest.Hex
	if d.Size > s.limit.Bytes {
		return layer.Stats{}, fmt.Errorf("%w: blob sha256:%s is %d bytes, more than %d", ErrTooLarge, digest, d.Size, s.limit.Bytes)
	}
	if err := os.MkdirAll(s.layersDir(), 0o700); err != nil {
		return layer.Stats{}, err
	}
	// Others must be able to search down to the layer directories: the
	// containers' user namespaces reach them through idmapped mounts.
	for _, p := range []string{filepath.Dir(s.layersDir()), s.layersDir()} {
		if err := os.Chmod(p, 0o711); err != nil {
			return layer.Stats{}, err
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(s.layersDir()), "tmp-"+digest[:12]+"-")
	if err != nil {
		return layer.Stats{}, err
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o711); err != nil {
		return layer.Stats{}, err
	}
	fsDir := filepath.Join(tmp, "fs")
	if err := os.Mkdir(fsDir, 0o755); err != nil {
		return layer.Stats{}, err
	}
	t0 := s.now()
	st, streamed, uerr := s.fetchUnpacking(ctx, repo, d, fsDir, left)
	if !streamed && uerr == nil {
		// Stored already, or resumed: unpack from the store.
		if err := os.RemoveAll(fsDir); err != nil {
			return layer.Stats{}, err
		}
		if err := os.Mkdir(fsDir, 0o755); err != nil {
			return layer.Stats{}, err
		}
		st, uerr = s.unpackStored(ctx, digest, fsDir, left)
	}
	if ctx.Err() != nil {
		return layer.Stats{}, ctx.Err()
	}
	if uerr != nil {
		if errors.Is(uerr, layer.ErrTooLarge) {
			s.blobs.Remove(digest) // a download cut short: nothing kept
			return layer.Stats{}, fmt.Errorf("%w: %w", ErrTooLarge, uerr)
		}
		var lerr *layerError
		if errors.As(uerr, &lerr) {
			s.blobs.Remove(digest)
			return layer.Stats{}, fmt.Errorf("%w: layer sha256:%s: %w", ErrBadManifest, digest, lerr.err)
		}
		return layer.Stats{}, uerr
	}
	t1 := s.now()
	if st.DiffID != diffID {
		return layer.Stats{}, fmt.Errorf("%w: layer sha256:%s unpacks to sha256:%s, its config says sha256:%s", ErrDiffID, digest, st.DiffID, diffID)
	}
	meta, err := json.Marshal(layerMeta{Stats: st, Unpacked: s.now().UTC()})
	if err != nil {
		return layer.Stats{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), meta, 0o600); err != nil {
		return layer.Stats{}, err
	}
	t2 := s.now()
	// One syncfs makes the unpacked files durable before the rename
	// says the layer is complete.
	if err := syncfs(tmp); err != nil {
		return layer.Stats{}, fmt.Errorf("syncing layer sha256:%s: %w", digest, err)
	}
	if err := os.Rename(tmp, filepath.Join(s.layersDir(), digest)); err != nil {
		return layer.Stats{}, fmt.Errorf("installing layer sha256:%s: %w", digest, err)
	}
	keep = true
	if err := content.SyncDir(s.layersDir()); err != nil {
		return layer.Stats{}, err
	}
	s.log.Debug().Str("layer", digest).Int64("bytes", st.Bytes).Int("entries", st.Entries).
		Bool("streamed", streamed).Dur("fetch_unpack", t1.Sub(t0)).Dur("sync", s.now().Sub(t2)).Msg("layer unpacked")
	return st, nil
}

// Layers makes the image of ref present (see Pull) and returns its layer
// directories in overlay's lowerdir order, the top layer first.
func (s *Store) Layers(ctx context.Context, ref provision.ImageRef) ([]string, error) {
	img, err := s.Pull(ctx, ref)
	if err != nil {
		return nil, err
	}
	return s.Lowers(img), nil
}

// layerError is a layer that does not unpack (a bad tar), as opposed to a
// failure to fetch it.
type layerError struct{ err error }

func (e *layerError) Error() string { return e.err.Error() }
func (e *layerError) Unwrap() error { return e.err }

// fetchUnpacking fetches and checks blob d (content.Store.Check),
// unpacking it into dir as it is downloaded from its start; streamed says
// whether it was (not when the blob was stored already or its download
// resumed: then it is stored, and unpacked from the store). The unpacker
// reads a buffered pipe the download writes to, so the two run at once:
// an unpack that fails closes the pipe, which stops the download; a
// download that fails closes it too.
func (s *Store) fetchUnpacking(ctx context.Context, repo *registry.Repo, d v1.Descriptor, dir string, left layer.Limit) (layer.Stats, bool, error) {
	digest := d.Digest.Hex
	if s.blobs.Has(digest) {
		return layer.Stats{}, false, nil
	}
	if repo == nil {
		return layer.Stats{}, false, fmt.Errorf("%w: blob sha256:%s is not in the store and no registry is configured", registry.ErrUnreachable, digest)
	}
	p := newPipe()
	type result struct {
		st  layer.Stats
		err error
	}
	done := make(chan result, 1)
	started := false
	fetch := func(ctx context.Context, off int64) (io.ReadCloser, bool, error) {
		body, resumed, err := repo.Blob(ctx, digest, off)
		if err != nil || (off > 0 && resumed) || started {
			return body, resumed, err
		}
		started = true
		go func() {
			st, err := layer.Unpack(ctx, p, dir, left)
			if err != nil {
				err = unpackErr(err)
				var lerr *layerError
				if errors.As(err, &lerr) {
					// Let the download end: its digest says whether
					// the layer is bad or its bytes were changed.
					io.Copy(io.Discard, p)
				} else {
					p.closeRead(err) // too large, or cancelled: stop it
				}
			}
			done <- result{st, err}
		}()
		return readCloser{Reader: io.TeeReader(body, p), Closer: body}, false, nil
	}
	_, ierr := s.blobs.Check(ctx, digest, d.Size, fetch)
	if !started {
		p.closeWrite(nil)
		return layer.Stats{}, false, ierr
	}
	if ierr != nil {
		p.closeWrite(ierr)
	} else {
		p.closeWrite(nil)
	}
	r := <-done
	switch {
	case ierr != nil && r.err != nil && errors.Is(ierr, r.err):
		return layer.Stats{}, true, r.err // the unpacker stopped the download
	case ierr != nil:
		return layer.Stats{}, true, ierr
	case r.err != nil:
		return layer.Stats{}, true, r.err
	}
	return r.st, true, nil
}

// unpackStored unpacks the stored blob digest into dir, checking its
// digest as it is read: a blob that changed on disk is removed.
func (s *Store) unpackStored(ctx context.Context, digest, dir string, left layer.Limit) (layer.Stats, error) {
	f, err := s.blobs.Open(digest)
	if err != nil {
		return layer.Stats{}, fmt.Errorf("opening layer sha256:%s: %w", digest, err)
	}
	defer f.Close()
	h := sha256.New()
	st, uerr := layer.Unpack(ctx, io.TeeReader(f, h), dir, left)
	if ctx.Err() != nil {
		return layer.Stats{}, ctx.Err()
	}
	if uerr != nil && errors.Is(uerr, layer.ErrTooLarge) {
		return layer.Stats{}, uerr
	}
	// The blob is checked whatever the tar said: a tampered blob is
	// removed, not reported as a bad layer.
	if _, err := io.Copy(h, f); err != nil {
		return layer.Stats{}, fmt.Errorf("reading layer sha256:%s: %w", digest, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != digest {
		return layer.Stats{}, s.blobs.Tampered(digest)
	}
	if uerr != nil {
		return layer.Stats{}, unpackErr(uerr)
	}
	return st, nil
}

// unpackErr marks an unpack failure that is the layer's own (a bad tar),
// keeping ErrTooLarge and context errors as they are.
func unpackErr(err error) error {
	if errors.Is(err, layer.ErrTooLarge) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &layerError{err: err}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// syncfs flushes the file system holding path.
func syncfs(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
