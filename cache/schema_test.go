package cache

import (
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// fileVersion reads the schema version of the closed file at path.
func fileVersion(t testing.TB, path string) uint64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	}()
	var v uint64
	if err := db.View(func(tx *bolt.Tx) error {
		var err error
		v, err = version(tx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func openWith(t testing.TB, path string, opts Options, migs []migration) error {
	t.Helper()
	s, err := open(path, opts, migs)
	if err != nil {
		return err
	}
	return s.Close()
}

func TestSchemaInitialises(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
	}{
		{"new-file", func(*testing.T, string) {}},
		{"empty-file", func(t *testing.T, path string) { writeFile(t, path, nil) }},
		{"bbolt-file-without-buckets", func(t *testing.T, path string) {
			rawUpdate(t, path, func(*bolt.Tx) error { return nil })
		}},
		{"meta-without-version", func(t *testing.T, path string) {
			rawUpdate(t, path, func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket(bucketMeta)
				return err
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tempPath(t)
			tt.prepare(t, path)
			s := openStore(t, path, Options{})
			if err := s.Add(provisiontest.NewRecord("a", provision.Accepted, time.Hour, "")); err != nil {
				t.Fatalf("Add to an initialised file: %v", err)
			}
			if err := s.Check(); err != nil {
				t.Error(err)
			}
			var v uint64
			if err := s.db.View(func(tx *bolt.Tx) (err error) { v, err = version(tx); return err }); err != nil || v != 1 {
				t.Errorf("version = %d, %v; want 1", v, err)
			}
		})
	}
}

func TestSchemaMigration(t *testing.T) {
	path := tempPath(t)
	if err := openWith(t, path, Options{}, migrations); err != nil {
		t.Fatal(err)
	}
	var runs []uint64
	failing := true
	testMigs := append(slices.Clone(migrations),
		migration{from: 1, to: 2, name: "test step", fn: func(tx *bolt.Tx) error {
			runs = append(runs, 2)
			if _, err := tx.CreateBucket([]byte("v2")); err != nil {
				return err
			}
			if failing {
				return errors.New("migration failed")
			}
			return nil
		}},
	)
	tests := []struct {
		name        string
		opts        Options
		migs        []migration
		fix         bool
		wantErr     error
		wantRuns    int
		wantVersion uint64
	}{
		{name: "read-only-refuses-to-migrate", opts: Options{ReadOnly: true}, migs: testMigs, wantErr: ErrSchemaTooOld, wantRuns: 0, wantVersion: 1},
		{name: "failed-step-keeps-version", migs: testMigs, wantErr: errAny, wantRuns: 1, wantVersion: 1},
		{name: "step-runs", migs: testMigs, fix: true, wantRuns: 2, wantVersion: 2},
		{name: "step-runs-once", migs: testMigs, wantRuns: 2, wantVersion: 2},
		{name: "read-only-at-newest", opts: Options{ReadOnly: true}, migs: testMigs, wantRuns: 2, wantVersion: 2},
		{name: "older-build-refuses", migs: migrations, wantErr: ErrSchemaTooNew, wantRuns: 2, wantVersion: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.fix {
				failing = false
			}
			err := openWith(t, path, tt.opts, tt.migs)
			switch {
			case tt.wantErr == errAny && err == nil:
				t.Error("open succeeded, want an error")
			case tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("open: %v, want %v", err, tt.wantErr)
			}
			if len(runs) != tt.wantRuns {
				t.Errorf("migration ran %d times, want %d", len(runs), tt.wantRuns)
			}
			if v := fileVersion(t, path); v != tt.wantVersion {
				t.Errorf("version %d, want %d", v, tt.wantVersion)
			}
		})
	}
	t.Run("no-path-from-version", func(t *testing.T) {
		path := tempPath(t)
		rawUpdate(t, path, func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			return meta.Put(keyVersion, be64(1))
		})
		gap := []migration{migrations[0], {from: 2, to: 3, fn: func(*bolt.Tx) error { return nil }}}
		if err := openWith(t, path, Options{}, gap); !errors.Is(err, ErrSchemaTooOld) {
			t.Errorf("open with no step from 1: %v, want ErrSchemaTooOld", err)
		}
	})
}

// errAny stands for "some error" in a table.
var errAny = errors.New("any error")

func TestMain(m *testing.M) {
	code := m.Run()
	cleanupFixture()
	os.Exit(code)
}
