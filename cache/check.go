package cache

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/provision"
)

// maxCheckErrors caps how many problems Check reports.
const maxCheckErrors = 20

// Check verifies the file: bbolt's own consistency check of the page tree
// (tx.Check), then that every index agrees with the records (state and
// units entries, expiry, digest and key entries, and nothing else). It
// returns nil for a sound file, or an error wrapping ErrCorrupt that lists
// up to 20 problems. It reads the whole file in one read transaction.
func (s *Store) Check() error {
	var problems []error
	report := func(err error) bool {
		problems = append(problems, err)
		return len(problems) < maxCheckErrors
	}
	err := s.view("checking cache", func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			report(err)
		}
		if len(problems) > 0 {
			return nil // the indexes of a broken page tree are not worth reading
		}
		return checkIndexesAll(tx, report)
	})
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, s.path, errors.Join(problems...))
	}
	return nil
}

// checkIndexesAll compares every index with the records; report returns
// false when enough problems were found.
func checkIndexesAll(tx *bolt.Tx, report func(error) bool) error {
	var buckets [6]*bolt.Bucket
	for i, name := range [][]byte{bucketRecords, bucketExpiry, bucketDigests, bucketKeys, bucketMeta, bucketOutbox} {
		b, err := bucket(tx, name)
		if err != nil {
			return err
		}
		buckets[i] = b
	}
	recs, exp, digests, keys, meta, ob := buckets[0], buckets[1], buckets[2], buckets[3], buckets[4], buckets[5]
	if err := checkOutbox(meta, ob); err != nil && !report(err) {
		return nil
	}
	var live, withKey, withDigest, n int
	err := recs.ForEach(func(k, v []byte) error {
		n++
		rec, err := decodeRecord(v)
		if err != nil {
			if !report(fmt.Errorf("record %s: %w", k, err)) {
				return errStop
			}
			return nil
		}
		x := indexOf(rec)
		var bad []string
		if x.id != string(k) {
			bad = append(bad, fmt.Sprintf("stored under %q", k))
		}
		sb, err := stateBucket(tx, x.state)
		if err != nil {
			bad = append(bad, err.Error())
		} else if u, err := encodeUnits(x.typ, x.user, x.units); err != nil {
			bad = append(bad, err.Error())
		} else if !bytes.Equal(sb.Get(k), u) {
			bad = append(bad, "state entry missing or with other units or owner")
		}
		if x.live() {
			live++
			if exp.Get(expiryKey(x.expires, x.id)) == nil {
				bad = append(bad, "expiry entry missing")
			}
		}
		if x.digest != "" {
			withDigest++
			if !bytes.Equal(digests.Get([]byte(x.digest)), k) {
				bad = append(bad, "digest entry missing or held by another")
			}
		}
		if x.holdsKey() {
			withKey++
			if !bytes.Equal(keys.Get([]byte(x.key)), k) {
				bad = append(bad, "key entry missing or held by another")
			}
		}
		for _, b := range bad {
			if !report(fmt.Errorf("record %s: %s", k, b)) {
				return errStop
			}
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return nil
	}
	if err != nil {
		return err
	}
	states := 0
	for _, st := range provision.States {
		sb, err := stateBucket(tx, st)
		if err != nil {
			return err
		}
		states += sb.Stats().KeyN
	}
	for _, c := range []struct {
		what      string
		got, want int
	}{
		{"states entries", states, n},
		{"expiry entries", exp.Stats().KeyN, live},
		{"digest entries", digests.Stats().KeyN, withDigest},
		{"key entries", keys.Stats().KeyN, withKey},
	} {
		if c.got != c.want && !report(fmt.Errorf("%d %s for %d records", c.got, c.what, c.want)) {
			return nil
		}
	}
	return nil
}

// checkOutbox checks the outbox counters in meta against the entries.
func checkOutbox(meta, ob *bolt.Bucket) error {
	var seq uint64
	if v := meta.Get(keyOutboxSeq); v != nil {
		var err error
		if seq, err = decodeUint64("outbox seq", v); err != nil {
			return err
		}
	}
	if last, _ := ob.Cursor().Last(); last != nil {
		if n, err := decodeUint64("outbox key", last); err != nil || n > seq {
			return fmt.Errorf("outbox entry %x is beyond the outbox seq %d", last, seq)
		}
	}
	if v := meta.Get(keyStatsSeq); v != nil {
		e := ob.Get(v)
		if e == nil {
			return fmt.Errorf("stats seq %x names no outbox entry", v)
		}
		if entry, err := decodeEntry(e); err != nil || entry.Kind != provision.OutboxStats {
			return fmt.Errorf("stats seq %x names an entry that is not stats", v)
		}
	}
	return nil
}
