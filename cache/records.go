package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/provision"
)

// Add stores a new record with its indexes and enqueues out, in one
// transaction. It fails with provision.ErrExists when the ID is known,
// provision.ErrReplay when another record (final ones included) holds the
// same non-empty Digest, provision.ErrConflict when another live record
// holds the same non-empty Key and provision.ErrBadField for a record
// without an ID or with an unknown State. A record added in a Final state
// holds no Key and is not in the expiry index. On success the Seq of every
// entry of out is set; nil entries are skipped.
func (s *Store) Add(rec *provision.Record, out ...*provision.OutboxEntry) error {
	return s.QueueAdd(rec, out...)()
}

// QueueAdd queues what Add does for the next group commit and returns at
// once; wait returns the outcome of Add once the write is durable. See
// provision.WriteQueuer.
func (s *Store) QueueAdd(rec *provision.Record, out ...*provision.OutboxEntry) (wait func() error) {
	v, err := encodeRecord(rec)
	if err != nil {
		return func() error { return fmt.Errorf("adding record: %w", err) }
	}
	enc, err := encodeEntries(out)
	if err != nil {
		return func() error { return fmt.Errorf("adding record: %w", err) }
	}
	x := indexOf(rec)
	return s.queueRecord("adding record", x, v, rec, out, enc, func(tx *bolt.Tx, recs *bolt.Bucket) error {
		if recs.Get([]byte(x.id)) != nil {
			return provision.ErrExists
		}
		if err := checkIndexes(tx, x); err != nil {
			return err
		}
		if err := recs.Put([]byte(x.id), v); err != nil {
			return err
		}
		return putIndexes(tx, x)
	})
}

// queueRecord queues the write of record x.id, stored as v (the encoding
// of rec), with the outbox entries out (encoded as enc): put checks and
// writes the record and its indexes, and the entries are enqueued after
// it in the same transaction. Once the transaction committed, the read
// cache holds a copy of rec (in commit order, see readCache); wait returns
// the write's outcome once it is durable and sets the entries' Seq.
func (s *Store) queueRecord(op string, x indexed, v []byte, rec *provision.Record, out []*provision.OutboxEntry, enc []queuedEntry,
	put func(tx *bolt.Tx, recs *bolt.Bucket) error) (wait func() error) {
	var seqs []uint64
	var txid uint64
	var kept *provision.Record // what the read cache keeps: none of a value too large for it
	if len(v) <= readMaxValue {
		kept = cloneRecord(rec)
	}
	done := s.queueThen(op+" "+x.id, func(tx *bolt.Tx) error {
		recs, err := bucket(tx, bucketRecords)
		if err != nil {
			return err
		}
		if err := put(tx, recs); err != nil {
			return err
		}
		seqs, err = enqueue(tx, enc)
		txid = uint64(tx.ID())
		return err
	}, func() { s.reads.written(x.id, v, kept, txid) })
	return func() error {
		if err := done(); err != nil {
			return err
		}
		setSeqs(out, seqs)
		return nil
	}
}

// Save overwrites an existing record, moves its indexes and enqueues out,
// in one transaction. It fails with provision.ErrNotFound when the record
// is absent, provision.ErrReplay when its Digest changed to one another
// record holds and provision.ErrConflict when it is live and another live
// record holds its Key. A record entering a Final state leaves the expiry
// index and releases its Key; one leaving it (error → deleting) takes both
// back.
func (s *Store) Save(rec *provision.Record, out ...*provision.OutboxEntry) error {
	return s.QueueSave(rec, out...)()
}

// QueueSave queues what Save does for the next group commit and returns at
// once; wait returns the outcome of Save once the write is durable. See
// provision.WriteQueuer.
//
// The stored record is read and decoded before the write is queued, in
// the caller's goroutine, so that the commit only compares it with what
// it finds (decoding it again in the rare case it changed meanwhile): the
// commit runs every queued write in one goroutine.
func (s *Store) QueueSave(rec *provision.Record, out ...*provision.OutboxEntry) (wait func() error) {
	v, err := encodeRecord(rec)
	if err != nil {
		return func() error { return fmt.Errorf("saving record: %w", err) }
	}
	enc, err := encodeEntries(out)
	if err != nil {
		return func() error { return fmt.Errorf("saving record: %w", err) }
	}
	x := indexOf(rec)
	seen, seenx := s.peekIndex(x.id)
	return s.queueRecord("saving record", x, v, rec, out, enc, func(tx *bolt.Tx, recs *bolt.Bucket) error {
		oldv := recs.Get([]byte(x.id))
		if oldv == nil {
			return provision.ErrNotFound
		}
		old := seenx
		if seen == nil || !bytes.Equal(oldv, seen) {
			rec, err := decodeRecord(oldv)
			if err != nil {
				return err
			}
			old = indexOf(rec)
		}
		if err := checkIndexes(tx, x); err != nil {
			return err
		}
		if err := moveIndexes(tx, old, x); err != nil {
			return err
		}
		return recs.Put([]byte(x.id), v)
	})
}

// peekIndex returns the stored value of record id and its index entries:
// those of the read cache, or else read in a transaction of its own; a nil
// value when there is none (or it cannot be decoded: the write decodes it
// again and reports that).
func (s *Store) peekIndex(id string) ([]byte, indexed) {
	if v, x := s.reads.index(id); v != nil {
		return v, x
	}
	var v []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		if recs := tx.Bucket(bucketRecords); recs != nil {
			v = bytes.Clone(recs.Get([]byte(id)))
		}
		return nil
	})
	if v == nil {
		return nil, indexed{}
	}
	rec, err := decodeRecord(v)
	if err != nil {
		return nil, indexed{}
	}
	return v, indexOf(rec)
}

// encodeRecord checks rec and returns its stored form.
func encodeRecord(rec *provision.Record) ([]byte, error) {
	if rec == nil || rec.Reservation == nil || rec.Reservation.ID == "" {
		return nil, fmt.Errorf("%w: record without a reservation id", provision.ErrBadField)
	}
	if !knownState(rec.State) {
		return nil, fmt.Errorf("%w: record %s has unknown state %q", provision.ErrBadField, rec.Reservation.ID, rec.State)
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encoding record %s: %w", rec.Reservation.ID, err)
	}
	return v, nil
}

// checkIndexes reports whether x may take its digest and key.
func checkIndexes(tx *bolt.Tx, x indexed) error {
	if x.digest != "" {
		digests, err := bucket(tx, bucketDigests)
		if err != nil {
			return err
		}
		if other := digests.Get([]byte(x.digest)); other != nil && string(other) != x.id {
			return fmt.Errorf("%w: digest %s is held by %s", provision.ErrReplay, x.digest, other)
		}
	}
	if x.holdsKey() {
		keys, err := bucket(tx, bucketKeys)
		if err != nil {
			return err
		}
		if other := keys.Get([]byte(x.key)); other != nil && string(other) != x.id {
			return fmt.Errorf("%w: key %s is held by %s", provision.ErrConflict, x.key, other)
		}
	}
	return nil
}

// putIndexes writes every index entry of x.
func putIndexes(tx *bolt.Tx, x indexed) error {
	id := []byte(x.id)
	sb, err := stateBucket(tx, x.state)
	if err != nil {
		return err
	}
	u, err := encodeUnits(x.typ, x.user, x.units)
	if err != nil {
		return err
	}
	if err := sb.Put(id, u); err != nil {
		return fmt.Errorf("indexing state: %w", err)
	}
	if x.live() {
		exp, err := bucket(tx, bucketExpiry)
		if err != nil {
			return err
		}
		if err := exp.Put(expiryKey(x.expires, x.id), nil); err != nil {
			return fmt.Errorf("indexing expiry: %w", err)
		}
	}
	if x.digest != "" {
		digests, err := bucket(tx, bucketDigests)
		if err != nil {
			return err
		}
		if err := digests.Put([]byte(x.digest), id); err != nil {
			return fmt.Errorf("indexing digest: %w", err)
		}
	}
	if x.holdsKey() {
		keys, err := bucket(tx, bucketKeys)
		if err != nil {
			return err
		}
		if err := keys.Put([]byte(x.key), id); err != nil {
			return fmt.Errorf("indexing key: %w", err)
		}
	}
	return nil
}

// moveIndexes changes the index entries of a record from those of old to
// those of x (same ID), leaving alone the entries both have: the result
// is that of deleting every index entry of old, then putIndexes(x), with
// fewer pages touched.
func moveIndexes(tx *bolt.Tx, old, x indexed) error {
	id := []byte(x.id)
	if old.state != x.state {
		sb, err := stateBucket(tx, old.state)
		if err != nil {
			return err
		}
		if err := sb.Delete(id); err != nil {
			return fmt.Errorf("unindexing state: %w", err)
		}
	}
	sb, err := stateBucket(tx, x.state)
	if err != nil {
		return err
	}
	u, err := encodeUnits(x.typ, x.user, x.units)
	if err != nil {
		return err
	}
	if !bytes.Equal(sb.Get(id), u) {
		if err := sb.Put(id, u); err != nil {
			return fmt.Errorf("indexing state: %w", err)
		}
	}
	if sameExpiry := old.live() && x.live() && old.expires.Equal(x.expires); !sameExpiry {
		exp, err := bucket(tx, bucketExpiry)
		if err != nil {
			return err
		}
		if err := exp.Delete(expiryKey(old.expires, old.id)); err != nil {
			return fmt.Errorf("unindexing expiry: %w", err)
		}
		if x.live() {
			if err := exp.Put(expiryKey(x.expires, x.id), nil); err != nil {
				return fmt.Errorf("indexing expiry: %w", err)
			}
		}
	}
	for _, ix := range []struct {
		name     []byte
		old, new string // "" when the record holds none
	}{{bucketDigests, old.digest, x.digest}, {bucketKeys, old.key, heldKey(x)}} {
		if ix.old == ix.new && ix.old == "" {
			continue
		}
		b, err := bucket(tx, ix.name)
		if err != nil {
			return err
		}
		if ix.old != "" && ix.old != ix.new && bytes.Equal(b.Get([]byte(ix.old)), id) {
			if err := b.Delete([]byte(ix.old)); err != nil {
				return fmt.Errorf("unindexing %s: %w", ix.name, err)
			}
		}
		if ix.new != "" && !bytes.Equal(b.Get([]byte(ix.new)), id) {
			if err := b.Put([]byte(ix.new), id); err != nil {
				return fmt.Errorf("indexing %s: %w", ix.name, err)
			}
		}
	}
	return nil
}

// heldKey returns the key x holds in the keys bucket, "" when none.
func heldKey(x indexed) string {
	if x.holdsKey() {
		return x.key
	}
	return ""
}

// Get returns the record of id, or provision.ErrNotFound. A record the
// read cache holds (written or read lately) is copied from it, without a
// transaction: the cache is exact (see readCache).
func (s *Store) Get(id string) (*provision.Record, error) {
	if hit := s.reads.get(id); hit != nil {
		return hit, nil
	}
	var v []byte
	var snap uint64
	err := s.view("getting record "+id, func(tx *bolt.Tx) error {
		recs, err := bucket(tx, bucketRecords)
		if err != nil {
			return err
		}
		if v = recs.Get([]byte(id)); v == nil {
			return provision.ErrNotFound
		}
		v, snap = bytes.Clone(v), uint64(tx.ID())
		return nil
	})
	if err != nil {
		return nil, err
	}
	rec, err := decodeRecord(v)
	if err != nil {
		return nil, fmt.Errorf("getting record %s: %w", id, err)
	}
	s.reads.read(id, v, rec, snap)
	return rec, nil
}

// Scan calls fn for every record in one of states (every record when none
// are given), state by state in the order given, each in ID order, and
// stops at the first error fn returns. It reads a batch of records per
// transaction and calls fn outside of it, so fn may call the store; it is
// not a snapshot: a record that changes state during the Scan may be seen
// twice or not at all.
func (s *Store) Scan(fn func(*provision.Record) error, states ...provision.State) error {
	call := func(_, v []byte) error {
		rec, err := decodeRecord(v)
		if err != nil {
			return err
		}
		return fn(rec)
	}
	if len(states) == 0 {
		return s.walk("scanning records", func(tx *bolt.Tx) (*bolt.Bucket, error) { return bucket(tx, bucketRecords) }, nil, call)
	}
	return s.eachState(states, func(st provision.State) error {
		return s.walk("scanning records in state "+string(st),
			func(tx *bolt.Tx) (*bolt.Bucket, error) { return stateBucket(tx, st) },
			func(tx *bolt.Tx, k, _ []byte) ([]byte, error) {
				recs, err := bucket(tx, bucketRecords)
				if err != nil {
					return nil, err
				}
				v := recs.Get(k)
				if v == nil {
					return nil, fmt.Errorf("%w: states/%s holds %s but reservations does not", ErrCorrupt, st, k)
				}
				return v, nil
			},
			call)
	})
}

// ScanUnits calls fn with the ID, owner, type and units of every record in one of
// states (every record when none are given), from the states buckets
// alone: it decodes no record. It stops at the first error fn returns; fn
// may call the store.
func (s *Store) ScanUnits(fn func(id, user string, typ provision.ReservationType, u provision.Units) error, states ...provision.State) error {
	if len(states) == 0 {
		states = provision.States
	}
	return s.eachState(states, func(st provision.State) error {
		return s.walk("scanning units in state "+string(st),
			func(tx *bolt.Tx) (*bolt.Bucket, error) { return stateBucket(tx, st) }, nil,
			func(k, v []byte) error {
				typ, user, u, err := decodeUnits(v)
				if err != nil {
					return fmt.Errorf("record %s: %w", k, err)
				}
				return fn(string(k), user, typ, u)
			})
	})
}

// eachState calls fn once for each distinct state of states, in order.
func (s *Store) eachState(states []provision.State, fn func(provision.State) error) error {
	seen := make(map[provision.State]bool, len(states))
	for _, st := range states {
		if seen[st] {
			continue
		}
		seen[st] = true
		if err := fn(st); err != nil {
			return err
		}
	}
	return nil
}

// walk iterates the bucket locate finds, in key order, copying up to
// scanBatch pairs per read transaction and calling fn on them after the
// transaction ended. value, when not nil, maps each pair to the value fn
// receives (inside the transaction).
func (s *Store) walk(op string,
	locate func(*bolt.Tx) (*bolt.Bucket, error),
	value func(tx *bolt.Tx, k, v []byte) ([]byte, error),
	fn func(k, v []byte) error,
) error {
	type pair struct{ k, v []byte }
	var after []byte
	for {
		batch := make([]pair, 0, scanBatch)
		done := false
		err := s.view(op, func(tx *bolt.Tx) error {
			b, err := locate(tx)
			if err != nil {
				return err
			}
			c := b.Cursor()
			var k, v []byte
			if after == nil {
				k, v = c.First()
			} else if k, v = c.Seek(after); bytes.Equal(k, after) {
				k, v = c.Next()
			}
			for ; k != nil && len(batch) < scanBatch; k, v = c.Next() {
				if value != nil {
					if v, err = value(tx, k, v); err != nil {
						return err
					}
				}
				batch = append(batch, pair{bytes.Clone(k), bytes.Clone(v)})
			}
			done = k == nil
			return nil
		})
		if err != nil {
			return err
		}
		for _, p := range batch {
			if err := fn(p.k, p.v); err != nil {
				return err
			}
		}
		if done || len(batch) == 0 {
			return nil
		}
		after = batch[len(batch)-1].k
	}
}

// Expired returns the IDs of records not in a Final state whose reservation
// expired at or before now, in expiry order (ID order among equal
// expiries). It walks the expiry index from its start: O(expired).
func (s *Store) Expired(now time.Time) ([]string, error) {
	bound := timeBits(now)
	var ids []string
	err := s.view("listing expired records", func(tx *bolt.Tx) error {
		exp, err := bucket(tx, bucketExpiry)
		if err != nil {
			return err
		}
		c := exp.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			at, id, err := splitExpiryKey(k)
			if err != nil {
				return err
			}
			if at > bound {
				break
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// NextExpiry returns the earliest expiry among records not in a Final
// state, in UTC; false when there is none. Times outside the years
// 1678–2262 are clamped to that range.
func (s *Store) NextExpiry() (time.Time, bool, error) {
	var at time.Time
	var ok bool
	err := s.view("reading next expiry", func(tx *bolt.Tx) error {
		exp, err := bucket(tx, bucketExpiry)
		if err != nil {
			return err
		}
		k, _ := exp.Cursor().First()
		if k == nil {
			return nil
		}
		bits, _, err := splitExpiryKey(k)
		if err != nil {
			return err
		}
		at, ok = bitsTime(bits), true
		return nil
	})
	return at, ok, err
}

// Owner returns the ID of the live record holding key, or
// provision.ErrNotFound.
func (s *Store) Owner(key string) (string, error) {
	var id string
	err := s.view("looking up owner of key "+key, func(tx *bolt.Tx) error {
		keys, err := bucket(tx, bucketKeys)
		if err != nil {
			return err
		}
		if key == "" {
			return provision.ErrNotFound
		}
		v := keys.Get([]byte(key))
		if v == nil {
			return provision.ErrNotFound
		}
		id = string(v)
		return nil
	})
	return id, err
}

// Counts returns how many records are in each state, from the states
// buckets; every state is present in the map.
func (s *Store) Counts() (map[provision.State]int, error) {
	counts := make(map[provision.State]int, len(provision.States))
	err := s.view("counting records", func(tx *bolt.Tx) error {
		for _, st := range provision.States {
			b, err := stateBucket(tx, st)
			if err != nil {
				return err
			}
			counts[st] = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return counts, nil
}
