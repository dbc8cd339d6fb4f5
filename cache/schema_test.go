package cache

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
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
			if err := s.db.View(func(tx *bolt.Tx) (err error) { v, err = version(tx); return err }); err != nil || v != latest(migrations) {
				t.Errorf("version = %d, %v; want %d", v, err, latest(migrations))
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
	cur := latest(migrations)
	testMigs := append(slices.Clone(migrations),
		migration{from: cur, to: cur + 1, name: "test step", fn: func(tx *bolt.Tx) error {
			runs = append(runs, cur+1)
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
		{name: "read-only-refuses-to-migrate", opts: Options{ReadOnly: true}, migs: testMigs, wantErr: ErrSchemaTooOld, wantRuns: 0, wantVersion: cur},
		{name: "failed-step-keeps-version", migs: testMigs, wantErr: errAny, wantRuns: 1, wantVersion: cur},
		{name: "step-runs", migs: testMigs, fix: true, wantRuns: 2, wantVersion: cur + 1},
		{name: "step-runs-once", migs: testMigs, wantRuns: 2, wantVersion: cur + 1},
		{name: "read-only-at-newest", opts: Options{ReadOnly: true}, migs: testMigs, wantRuns: 2, wantVersion: cur + 1},
		{name: "older-build-refuses", migs: migrations, wantErr: ErrSchemaTooNew, wantRuns: 2, wantVersion: cur + 1},
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

// mustUnits encodes a units entry or fails t.
func mustUnits(t testing.TB, typ provision.ReservationType, user string, u provision.Units) []byte {
	t.Helper()
	v, err := encodeUnits(typ, user, u)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSchemaV2AddsOwners writes a version 1 file, with the units entries
// of version 1 (units ‖ type), and opens it with this build: the 1 → 2
// step gives every entry its record's owner, ScanUnits reads it, and
// Check finds nothing wrong.
func TestSchemaV2AddsOwners(t *testing.T) {
	path := tempPath(t)
	s, err := open(path, Options{}, migrations[:1])
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{}
	for i, st := range []provision.State{provision.Accepted, provision.Deployed, provision.Deployed, provision.Deleted} {
		rec := provisiontest.NewRecord(fmt.Sprintf("r%d", i), st, time.Hour, "")
		rec.Reservation.UserID = fmt.Sprintf("%064x", i%2)
		rec.Units = provision.Units{CRU: uint64(i + 1), MRU: 0.5}
		users[rec.ID()] = rec.Reservation.UserID
		if err := s.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		for _, st := range provision.States {
			sb := tx.Bucket(bucketStates).Bucket([]byte(st))
			var rewrite [][2][]byte
			if err := sb.ForEach(func(k, v []byte) error {
				typ, _, u, err := decodeUnits(v)
				if err != nil {
					return err
				}
				v1 := mustUnits(t, typ, "", u)
				v1 = append(v1[:unitsSize], typ...) // no length byte, no owner
				rewrite = append(rewrite, [2][]byte{bytes.Clone(k), v1})
				return nil
			}); err != nil {
				return err
			}
			for _, kv := range rewrite {
				if err := sb.Put(kv[0], kv[1]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if v := fileVersion(t, path); v != 1 {
		t.Fatalf("prepared file is version %d, want 1", v)
	}
	s = openStore(t, path, Options{})
	if err := s.Check(); err != nil {
		t.Fatalf("Check after the migration: %v", err)
	}
	got := map[string]string{}
	err = s.ScanUnits(func(id, user string, typ provision.ReservationType, u provision.Units) error {
		got[id] = user
		if typ != provision.VolumeReservation {
			t.Errorf("%s: type %q after the migration", id, typ)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, users) {
		t.Errorf("owners after the migration = %v, want %v", got, users)
	}
}

// errAny stands for "some error" in a table.
var errAny = errors.New("any error")

func TestMain(m *testing.M) {
	code := m.Run()
	cleanupFixture()
	os.Exit(code)
}
