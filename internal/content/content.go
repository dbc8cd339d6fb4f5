// Package content is provisiond's store of blobs (image manifests,
// configurations and compressed layers) keyed by their sha256.
//
// Layout under its directory (<data-dir>/blobs):
//
//	sha256/<hex>   a complete blob, fsynced, whose sha256 was checked
//	ingest/<hex>   a download under way or interrupted: its bytes so far
//
// A blob enters the store only through Ingest, which writes it to
// ingest/<hex> (resuming an interrupted download from its length), checks
// its size and sha256, fsyncs it and renames it into place; concurrent
// Ingests of one digest fetch it once. Check is Ingest for a blob the
// caller uses as it arrives and keeps in another form (a layer unpacked
// as it downloads): the complete, checked download is removed instead of
// stored, so its bytes are never forced to disk. A blob read back is checked again
// by whoever reads it (Verify, or a reader hashing as it goes): one whose
// bytes changed on disk is removed and reported with ErrTampered.
package content

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgeprov/provisiond/internal/writeback"
)

// Sentinel errors of the content store.
var (
	// ErrDigestMismatch is returned when fetched bytes do not have the
	// digest asked for.
	ErrDigestMismatch = errors.New("content: digest mismatch")
	// ErrSizeMismatch is returned when a fetched blob is longer or
	// shorter than its descriptor says.
	ErrSizeMismatch = errors.New("content: size mismatch")
	// ErrTampered is returned when a stored blob no longer has its
	// digest; it has been removed.
	ErrTampered = errors.New("content: stored blob changed on disk")
	// ErrBadDigest is returned for a digest that is not 64 lowercase hex
	// digits.
	ErrBadDigest = errors.New("content: bad digest")
)

// Fetch opens the blob's bytes from offset on. resumed reports whether the
// answer starts at offset (a server may ignore a Range and send it all,
// then the store starts over).
type Fetch func(ctx context.Context, offset int64) (body io.ReadCloser, resumed bool, err error)

// Store is a content store rooted at a directory.
type Store struct {
	dir string

	mu       sync.Mutex
	inflight map[string]*call
}

// call is one Ingest or Check in flight, shared by every caller of its
// digest.
type call struct {
	done chan struct{}
	err  error
}

// New returns the store rooted at dir (created when needed).
func New(dir string) *Store {
	return &Store{dir: dir, inflight: map[string]*call{}}
}

// Dir returns the store's root directory.
func (s *Store) Dir() string { return s.dir }

// Path returns where the blob of digest is (or would be) stored.
func (s *Store) Path(digest string) string { return filepath.Join(s.dir, "sha256", digest) }

func (s *Store) ingestPath(digest string) string { return filepath.Join(s.dir, "ingest", digest) }

// Has reports whether the blob of digest is stored.
func (s *Store) Has(digest string) bool {
	if CheckDigest(digest) != nil {
		return false
	}
	st, err := os.Stat(s.Path(digest))
	return err == nil && st.Mode().IsRegular()
}

// CheckDigest returns ErrBadDigest unless digest is 64 lowercase hex
// digits: only such names become paths.
func CheckDigest(digest string) error {
	if len(digest) != 64 {
		return fmt.Errorf("%w: %q", ErrBadDigest, digest)
	}
	for _, c := range digest {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w: %q", ErrBadDigest, digest)
		}
	}
	return nil
}

// Ingest makes sure the blob of digest, size bytes long, is stored,
// fetching it with fetch when it is not. An interrupted download is kept
// in ingest/ and resumed from its length by the next Ingest. Bytes past
// size, too few bytes or another digest fail, the partial download is
// removed, and the error wraps ErrSizeMismatch or ErrDigestMismatch.
// Concurrent Ingests of one digest fetch it once: the others wait for it
// (or their own ctx).
func (s *Store) Ingest(ctx context.Context, digest string, size int64, fetch Fetch) error {
	_, err := s.fetchOnce(ctx, digest, size, fetch, true)
	return err
}

// Check fetches the blob of digest, size bytes long, and checks it as
// Ingest does, without storing it: the caller uses the bytes as fetch's
// body yields them, and keeps them in another form. They are written to
// ingest/<hex> as they arrive, with no fsync, only so that an interrupted
// download resumes; a complete download is removed once checked. stored
// reports that the blob is stored all the same: it was already, or the
// download resumed an interrupted one (whose first bytes the caller did
// not see) and was stored as Ingest stores it.
func (s *Store) Check(ctx context.Context, digest string, size int64, fetch Fetch) (stored bool, err error) {
	return s.fetchOnce(ctx, digest, size, fetch, false)
}

// fetchOnce runs ingest for digest unless it is stored, once at a time:
// concurrent callers wait for the running one, then look again.
func (s *Store) fetchOnce(ctx context.Context, digest string, size int64, fetch Fetch, keep bool) (bool, error) {
	if err := CheckDigest(digest); err != nil {
		return false, err
	}
	if size < 0 {
		return false, fmt.Errorf("%w: blob %s has a negative size", ErrSizeMismatch, digest)
	}
	for {
		if s.Has(digest) {
			return true, nil
		}
		s.mu.Lock()
		c, ok := s.inflight[digest]
		if !ok {
			c = &call{done: make(chan struct{})}
			s.inflight[digest] = c
			s.mu.Unlock()
			var stored bool
			stored, c.err = s.ingest(ctx, digest, size, fetch, keep)
			s.mu.Lock()
			delete(s.inflight, digest)
			s.mu.Unlock()
			close(c.done)
			return stored, c.err
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-c.done:
		}
		// Stored, or checked only (the loop fetches it again), or failed,
		// perhaps for the other caller's ctx: look again (a permanent
		// error comes again).
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
	}
}

// ingest downloads the blob of digest into ingest/<hex>, resuming what
// is there, and checks it; then it stores it (commit) when keep is set or
// the download resumed, and removes it otherwise.
func (s *Store) ingest(ctx context.Context, digest string, size int64, fetch Fetch, keep bool) (bool, error) {
	for _, d := range []string{filepath.Join(s.dir, "sha256"), filepath.Join(s.dir, "ingest")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return false, fmt.Errorf("creating content store: %w", err)
		}
	}
	p := s.ingestPath(digest)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false, fmt.Errorf("opening download of blob %s: %w", digest, err)
	}
	defer f.Close()
	h := sha256.New()
	// What an earlier, interrupted download wrote is hashed again: it is
	// not trusted more than the network.
	have, err := io.Copy(h, f)
	if err != nil {
		return false, fmt.Errorf("reading download of blob %s: %w", digest, err)
	}
	if have > size {
		have = 0
	}
	if have == size && size > 0 {
		return true, s.commit(f, h, digest)
	}
	body, resumed, err := fetch(ctx, have)
	if err != nil {
		return false, err
	}
	defer body.Close()
	if !resumed || have == 0 {
		have = 0
		h.Reset()
	}
	keep = keep || have > 0
	if err := f.Truncate(have); err != nil {
		return false, err
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return false, err
	}
	// A blob to keep is fsynced at the end: its writeback starts as it
	// arrives, so that the fsync finds little left to write.
	var w io.Writer = f
	if keep {
		w = writeback.New(f, have)
	}
	// One byte more than is missing shows a blob that is too long.
	n, err := io.CopyBuffer(io.MultiWriter(w, h), io.LimitReader(ctxReader{ctx, body}, size-have+1), make([]byte, copyBuffer))
	if err != nil {
		// Interrupted: what was written stays for the next try.
		return false, fmt.Errorf("downloading blob %s (%d of %d bytes): %w", digest, have+n, size, err)
	}
	if have+n != size {
		os.Remove(p)
		return false, fmt.Errorf("%w: blob sha256:%s is not %d bytes long", ErrSizeMismatch, digest, size)
	}
	if !keep {
		if err := checkSum(h, p, digest); err != nil {
			return false, err
		}
		return false, os.Remove(p)
	}
	return true, s.commit(f, h, digest)
}

// copyBuffer is the buffer of a download: large reads and writes.
const copyBuffer = 1 << 20

// checkSum returns ErrDigestMismatch, and removes the download at p,
// unless h summed digest.
func checkSum(h hash.Hash, p, digest string) error {
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		os.Remove(p)
		return fmt.Errorf("%w: blob is not sha256:%s", ErrDigestMismatch, digest)
	}
	return nil
}

// commit checks the digest of the complete download f, fsyncs it and
// renames it into the store.
func (s *Store) commit(f *os.File, h hash.Hash, digest string) error {
	if err := checkSum(h, f.Name(), digest); err != nil {
		return err
	}
	p := f.Name()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing blob %s: %w", digest, err)
	}
	if err := os.Rename(p, s.Path(digest)); err != nil {
		return fmt.Errorf("storing blob %s: %w", digest, err)
	}
	if err := SyncDir(filepath.Join(s.dir, "sha256")); err != nil {
		return fmt.Errorf("syncing content store: %w", err)
	}
	return nil
}

// Put stores b, which must have digest, fsynced. It is how an import
// (whose bytes are at hand) fills the store.
func (s *Store) Put(digest string, b []byte) error {
	return s.Ingest(context.Background(), digest, int64(len(b)), func(context.Context, int64) (io.ReadCloser, bool, error) {
		return io.NopCloser(bytes.NewReader(b)), false, nil
	})
}

// ReadVerified returns the stored blob of digest, at most max bytes, after
// checking its sha256; a blob that changed is removed (ErrTampered).
func (s *Store) ReadVerified(digest string, max int64) ([]byte, error) {
	if err := CheckDigest(digest); err != nil {
		return nil, err
	}
	f, err := os.Open(s.Path(digest))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: blob %s is more than %d bytes", ErrSizeMismatch, digest, max)
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != digest {
		s.Remove(digest)
		return nil, fmt.Errorf("%w: sha256:%s (removed)", ErrTampered, digest)
	}
	return b, nil
}

// Open opens the stored blob of digest. Its reader must hash what it reads
// and call Tampered when the sum is wrong.
func (s *Store) Open(digest string) (*os.File, error) {
	if err := CheckDigest(digest); err != nil {
		return nil, err
	}
	return os.Open(s.Path(digest))
}

// Tampered removes the blob of digest, whose bytes a reader found changed,
// and returns the error to report.
func (s *Store) Tampered(digest string) error {
	s.Remove(digest)
	return fmt.Errorf("%w: sha256:%s (removed)", ErrTampered, digest)
}

// Remove deletes the blob of digest and any download of it.
func (s *Store) Remove(digest string) error {
	if err := CheckDigest(digest); err != nil {
		return err
	}
	err := os.Remove(s.Path(digest))
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if ierr := os.Remove(s.ingestPath(digest)); ierr != nil && !errors.Is(ierr, fs.ErrNotExist) {
		err = errors.Join(err, ierr)
	}
	return err
}

// Blob describes a stored blob.
type Blob struct {
	// Digest is its sha256, hex.
	Digest string
	// Size is its length in bytes.
	Size int64
	// ModTime is when it was stored.
	ModTime time.Time
}

// List returns the stored blobs.
func (s *Store) List() ([]Blob, error) {
	return s.list(filepath.Join(s.dir, "sha256"))
}

// Downloads returns the interrupted downloads (ingest/).
func (s *Store) Downloads() ([]Blob, error) {
	return s.list(filepath.Join(s.dir, "ingest"))
}

func (s *Store) list(dir string) ([]Blob, error) {
	es, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Blob
	for _, e := range es {
		if CheckDigest(e.Name()) != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, Blob{Digest: e.Name(), Size: fi.Size(), ModTime: fi.ModTime()})
	}
	return out, nil
}

// InFlight reports whether an Ingest of digest is under way in this
// process (its download must not be collected).
func (s *Store) InFlight(digest string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.inflight[digest]
	return ok
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

// SyncDir fsyncs directory dir, so the names just made in it last.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
