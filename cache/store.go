package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/edgeprov/provisiond/internal/commit"
	"github.com/edgeprov/provisiond/provision"
)

// Errors of the cache package. The provision semantics (not found, exists,
// replay, conflict) are reported with the provision sentinels, wrapped.
var (
	ErrLocked       = errors.New("cache: database is locked")
	ErrSchemaTooNew = errors.New("cache: database schema is newer than this build")
	ErrSchemaTooOld = errors.New("cache: database schema needs a migration")
	ErrCorrupt      = errors.New("cache: database is corrupt")
	ErrClosed       = errors.New("cache: store is closed")
	ErrReadOnly     = errors.New("cache: store is read-only")

	// errStop ends an iteration early; it never leaves the package.
	errStop = errors.New("cache: stop")
)

var (
	_ provision.Store        = (*Store)(nil)
	_ provision.WriteQueuer  = (*Store)(nil)
	_ provision.UnitsScanner = (*Store)(nil)
	_ provision.Trimmer      = (*Store)(nil)
)

// Names of the buckets and meta keys; see the drawing in doc.go.
var (
	bucketMeta      = []byte("meta")
	bucketRecords   = []byte("reservations")
	bucketStates    = []byte("states")
	bucketExpiry    = []byte("expiry")
	bucketDigests   = []byte("digests")
	bucketKeys      = []byte("keys")
	bucketOutbox    = []byte("outbox")
	bucketCursors   = []byte("cursors")
	keyVersion      = []byte("version")
	keyOutboxSeq    = []byte("outbox-seq")
	keyStatsSeq     = []byte("stats-seq")
	topLevelBuckets = [][]byte{bucketMeta, bucketRecords, bucketStates, bucketExpiry, bucketDigests, bucketKeys, bucketOutbox, bucketCursors}
)

const (
	defaultTimeout = time.Second
	fileMode       = 0o600
	dirMode        = 0o700
	// scanBatch is how many items an iteration copies per read transaction
	// before it calls back outside of it.
	scanBatch = 512
)

// Options configures Open.
type Options struct {
	// Timeout is how long Open waits for the file lock before it fails
	// with ErrLocked. Default: 1s.
	Timeout time.Duration
	// ReadOnly opens the file for reading only, with a shared lock; it
	// fails with ErrLocked while a writer (the daemon) holds the file.
	// Default: false.
	ReadOnly bool
	// NoSync skips fsync after each transaction. Only for benchmarks and
	// tests: a crash may lose or corrupt data. Default: false.
	NoSync bool
	// Log receives migration notices. Default: disabled (zerolog.Nop()).
	Log zerolog.Logger
}

// Store is the bbolt implementation of provision.Store. It is safe for
// concurrent use; every method is one transaction. Concurrent writes are
// group-committed: those that queue up while a commit runs share the next
// bbolt transaction and its fsync, each keeping its own outcome (see
// commit.Group).
type Store struct {
	db     *bolt.DB
	path   string
	ro     bool
	log    zerolog.Logger
	writes *commit.Group // nil when read-only
	reads  *readCache
}

// Open opens (creating it when absent, unless ReadOnly) the database at
// path, migrates it to the newest schema version and returns the store. It
// fails with ErrLocked when another process holds the file, ErrCorrupt when
// the file is not a valid database, ErrSchemaTooNew when a newer build
// wrote it and (ReadOnly only) ErrSchemaTooOld when it needs a migration.
func Open(path string, opts Options) (*Store, error) {
	return open(path, opts, migrations)
}

func open(path string, opts Options, migs []migration) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
			return nil, fmt.Errorf("opening cache %s: %w", path, err)
		}
	}
	db, err := bolt.Open(path, fileMode, &bolt.Options{
		Timeout:      opts.Timeout,
		ReadOnly:     opts.ReadOnly,
		NoSync:       opts.NoSync,
		FreelistType: bolt.FreelistMapType,
	})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s is held by another process (probably another provisiond) after waiting %s: %w",
			ErrLocked, path, opts.Timeout, err)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrInvalidMapping):
		return nil, fmt.Errorf("%w: opening %s: %w", ErrCorrupt, path, err)
	case err != nil:
		return nil, fmt.Errorf("opening cache %s: %w", path, err)
	}
	s := &Store{db: db, path: path, ro: opts.ReadOnly, log: opts.Log.With().Str("component", "cache").Logger(), reads: newReadCache()}
	if !s.ro {
		s.writes = commit.NewGroup(db)
	}
	if err := s.migrate(migs); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("opening cache %s: %w", path, err)
	}
	return s, nil
}

// Trim drops the read cache (provision.Trimmer): the Engine calls it when
// it has nothing to run, so that an idle daemon does not keep the records
// of its last burst of work decoded in memory.
func (s *Store) Trim() { s.reads.clear() }

// Close releases the file. Methods called after Close fail with ErrClosed.
func (s *Store) Close() error {
	if s.writes != nil {
		s.writes.Close() // commits what is queued first
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing cache %s: %w", s.path, err)
	}
	return nil
}

// Path returns the path of the database file.
func (s *Store) Path() string { return s.path }

// view runs fn in a read transaction.
func (s *Store) view(op string, fn func(tx *bolt.Tx) error) error {
	if err := s.db.View(fn); err != nil {
		return fmt.Errorf("%s: %w", op, dbErr(err))
	}
	return nil
}

// update runs fn in a write transaction (shared with the writes queued
// beside it: see commit.Group) and returns once it is durable.
func (s *Store) update(op string, fn func(tx *bolt.Tx) error) error {
	return s.queue(op, fn)()
}

// queue submits fn to the next group commit and returns a function that
// waits until it is durable and returns its error. Writes are applied in
// the order they were queued.
func (s *Store) queue(op string, fn func(tx *bolt.Tx) error) (wait func() error) {
	return s.queueThen(op, fn, nil)
}

// queueThen is queue with a function after, run once fn's transaction
// committed and before wait returns (see commit.Group.QueueThen).
func (s *Store) queueThen(op string, fn func(tx *bolt.Tx) error, after func()) (wait func() error) {
	if s.ro {
		return func() error { return fmt.Errorf("%s: %w", op, ErrReadOnly) }
	}
	w := s.writes.QueueThen(fn, after)
	return func() error {
		if err := w.Wait(); err != nil {
			return fmt.Errorf("%s: %w", op, dbErr(err))
		}
		return nil
	}
}

// dbErr maps bbolt's errors to the package's.
func dbErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) || errors.Is(err, commit.ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// bucket returns the top-level bucket name of tx or an ErrCorrupt error.
func bucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	b := tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("%w: bucket %s is missing", ErrCorrupt, name)
	}
	return b, nil
}

// stateBucket returns the bucket of state st, or an error when st is not a
// known state.
func stateBucket(tx *bolt.Tx, st provision.State) (*bolt.Bucket, error) {
	states, err := bucket(tx, bucketStates)
	if err != nil {
		return nil, err
	}
	b := states.Bucket([]byte(st))
	if b == nil {
		if knownState(st) {
			return nil, fmt.Errorf("%w: bucket states/%s is missing", ErrCorrupt, st)
		}
		return nil, fmt.Errorf("%w: unknown state %q", provision.ErrBadField, st)
	}
	return b, nil
}

func knownState(st provision.State) bool {
	for _, k := range provision.States {
		if st == k {
			return true
		}
	}
	return false
}
