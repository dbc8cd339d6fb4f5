package cache

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/provision"
)

// migration moves a database from schema version from to version to, inside
// one write transaction that also records the new version.
type migration struct {
	from, to uint64
	name     string
	fn       func(tx *bolt.Tx) error
}

// migrations lists every schema step in order. Version 0 is a file without
// a version: a new one, or one whose meta bucket was never written.
var migrations = []migration{
	{from: 0, to: 1, name: "create the bucket tree", fn: initV1},
	{from: 1, to: 2, name: "add the owner to the units entries", fn: unitsOwnerV2},
}

// latest returns the newest version migs reach.
func latest(migs []migration) uint64 {
	var v uint64
	for _, m := range migs {
		v = max(v, m.to)
	}
	return v
}

// initV1 creates the buckets of schema version 1.
func initV1(tx *bolt.Tx) error {
	for _, name := range topLevelBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("creating bucket %s: %w", name, err)
		}
	}
	states := tx.Bucket(bucketStates)
	for _, st := range provision.States {
		if _, err := states.CreateBucketIfNotExists([]byte(st)); err != nil {
			return fmt.Errorf("creating bucket states/%s: %w", st, err)
		}
	}
	return nil
}

// unitsOwnerV2 rewrites every units entry of the states buckets with the
// owner's user ID, read from the record (version 1 held only the units
// and the type): per-user usage is then rebuilt at start from the states
// buckets alone, as the total is. It decodes every record once.
func unitsOwnerV2(tx *bolt.Tx) error {
	recs, err := bucket(tx, bucketRecords)
	if err != nil {
		return err
	}
	for _, st := range provision.States {
		sb, err := stateBucket(tx, st)
		if err != nil {
			return err
		}
		// Collect first: a bucket must not be written while a cursor or
		// ForEach walks it.
		var ids [][]byte
		if err := sb.ForEach(func(k, _ []byte) error {
			ids = append(ids, bytes.Clone(k))
			return nil
		}); err != nil {
			return err
		}
		for _, k := range ids {
			v := recs.Get(k)
			if v == nil {
				return fmt.Errorf("%w: states/%s holds %s but reservations does not", ErrCorrupt, st, k)
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("record %s: %w", k, err)
			}
			x := indexOf(rec)
			u, err := encodeUnits(x.typ, x.user, x.units)
			if err != nil {
				return fmt.Errorf("record %s: %w", k, err)
			}
			if err := sb.Put(k, u); err != nil {
				return fmt.Errorf("rewriting states/%s/%s: %w", st, k, err)
			}
		}
	}
	return nil
}

// version reads the schema version of tx; 0 when none is recorded.
func version(tx *bolt.Tx) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, nil
	}
	v := meta.Get(keyVersion)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: schema version is %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// migrate brings the file to the newest version of migs, one transaction
// per step, and checks that the bucket tree is complete.
func (s *Store) migrate(migs []migration) error {
	want := latest(migs)
	for {
		var have uint64
		if err := s.view("reading schema version", func(tx *bolt.Tx) error {
			var err error
			have, err = version(tx)
			return err
		}); err != nil {
			return err
		}
		if have > want {
			return fmt.Errorf("%w: file is version %d, this build knows up to %d", ErrSchemaTooNew, have, want)
		}
		if have == want {
			break
		}
		if s.ro {
			return fmt.Errorf("%w: file is version %d, this build needs %d; open it read-write once", ErrSchemaTooOld, have, want)
		}
		step, ok := findStep(migs, have)
		if !ok {
			return fmt.Errorf("%w: no migration from schema version %d", ErrSchemaTooOld, have)
		}
		s.log.Info().Uint64("from", step.from).Uint64("to", step.to).Str("migration", step.name).Msg("migrating schema")
		err := s.update(fmt.Sprintf("migrating schema %d → %d", step.from, step.to), func(tx *bolt.Tx) error {
			if err := step.fn(tx); err != nil {
				return err
			}
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			return meta.Put(keyVersion, be64(step.to))
		})
		if err != nil {
			return err
		}
	}
	return s.view("checking bucket tree", func(tx *bolt.Tx) error {
		for _, name := range topLevelBuckets {
			if _, err := bucket(tx, name); err != nil {
				return err
			}
		}
		for _, st := range provision.States {
			if _, err := stateBucket(tx, st); err != nil {
				return err
			}
		}
		return nil
	})
}

func findStep(migs []migration, from uint64) (migration, bool) {
	for _, m := range migs {
		if m.from == from && m.to > from {
			return m, true
		}
	}
	return migration{}, false
}

// be64 returns v as 8 big-endian bytes.
func be64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}
