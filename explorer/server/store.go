package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/internal/commit"
	"github.com/edgeprov/provisiond/provision"
)

// schemaVersion is the version of the bucket tree drawn in doc.go.
const schemaVersion = "3"

var (
	bucketMeta         = []byte("meta")
	bucketNodes        = []byte("nodes")
	bucketReservations = []byte("reservations")
	bucketResults      = []byte("results")
	bucketDigests      = []byte("digests")
	bucketUsers        = []byte("users")
	bucketEvents       = []byte("events")
	bucketUndelivered  = []byte("undelivered")
	bucketDelivered    = []byte("delivered")
	bucketPages        = []byte("pages")
	bucketActive       = []byte("active")
	// bucketSuperseded holds id\x00digest for each replaced version's
	// digest, which stays in bucketDigests (a replay of an old version
	// stays refused) until the reservation expires.
	bucketSuperseded = []byte("superseded")
	keyVersion       = []byte("version")
)

// BoltStore is the explorer's bbolt database, <dir>/explorer.db (drawn in
// doc.go): the default, for one explorerd process. Every write goes through
// its group commit: concurrent requests share transactions and fsyncs.
type BoltStore struct {
	db     *bolt.DB
	commit *commit.Group
}

var _ Store = (*BoltStore)(nil)

// OpenBolt opens (or creates) dir/explorer.db; noSync skips fsync on commit
// (tests and benchmarks only). A second process on the same file fails
// after a second with a clear error.
func OpenBolt(dir string, noSync bool) (*BoltStore, error) {
	path := filepath.Join(dir, "explorer.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: noSync})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("opening %s: %w (is another explorerd using it?)", path, err)
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		v := meta.Get(keyVersion)
		switch {
		case v == nil:
		case string(v) == "1" || string(v) == "2":
			if string(v) == "1" {
				if err := migrate1to2(tx); err != nil {
					return fmt.Errorf("migrating schema 1 to 2: %w", err)
				}
			}
			if err := migrate2to3(tx); err != nil {
				return fmt.Errorf("migrating schema 2 to 3: %w", err)
			}
		case string(v) != schemaVersion:
			return fmt.Errorf("%w: database schema %q, this explorerd knows %q", ErrSchema, v, schemaVersion)
		}
		for _, b := range [][]byte{bucketNodes, bucketReservations, bucketResults, bucketDigests, bucketUsers, bucketEvents,
			bucketUndelivered, bucketDelivered, bucketPages, bucketActive, bucketSuperseded} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return meta.Put(keyVersion, []byte(schemaVersion))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising %s: %w", path, err)
	}
	return &BoltStore{db: db, commit: commit.NewGroup(db)}, nil
}

// migrate1to2 adds the delivery buckets of schema 2: every reservation of
// schema 1 enters undelivered/ under the event that created it, so the
// node's next poll marks it delivered (at that time: schema 1 did not
// keep when the node polled past it).
func migrate1to2(tx *bolt.Tx) error {
	ub, err := tx.CreateBucketIfNotExists(bucketUndelivered)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(bucketDelivered); err != nil {
		return err
	}
	events := tx.Bucket(bucketEvents)
	if events == nil {
		return nil
	}
	return events.ForEachBucket(func(node []byte) error {
		nb, err := ub.CreateBucketIfNotExists(node)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		return events.Bucket(node).ForEach(func(k, v []byte) error {
			var ev struct {
				ID     string `json:"id"`
				NodeID string `json:"node_id"`
			}
			if json.Unmarshal(v, &ev) != nil || ev.ID == "" || ev.NodeID != string(node) || seen[ev.ID] {
				return nil // an injected event, or a later one (a delete)
			}
			seen[ev.ID] = true
			return nb.Put(k, []byte(ev.ID))
		})
	})
}

// migrate2to3 brings a schema 2 database to schema 3: it creates the
// pages and active indexes and fills them from the stored reservations.
func migrate2to3(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketPages, bucketActive} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketReservations).ForEach(func(k, v []byte) error {
		var r provision.Reservation
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decoding reservation %s: %w", k, err)
		}
		return indexUser(tx, &r)
	})
}

// indexUser adds r to its user's pages and, unless it is marked for
// deletion, to the user's active index.
func indexUser(tx *bolt.Tx, r *provision.Reservation) error {
	if err := tx.Bucket(bucketPages).Put(pageKey(r.UserID, CursorOf(r)), nil); err != nil {
		return err
	}
	if r.ToDelete {
		return nil
	}
	return tx.Bucket(bucketActive).Put(activeKey(r.UserID, r.Expires(), r.ID), nil)
}

// timeKey is t in microseconds as a big-endian uint64 with the sign bit
// flipped, so that keys sort as times do.
func timeKey(micros int64) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(micros)^(1<<63))
}

// pageKey is user 0x00 created 0x00 id: the position of a reservation in
// its user's list, or of a cursor.
func pageKey(user string, c Cursor) []byte {
	k := make([]byte, 0, len(user)+1+8+1+len(c.ID))
	k = append(k, user...)
	k = append(k, 0)
	k = append(k, timeKey(c.Micros)...)
	k = append(k, 0)
	return append(k, c.ID...)
}

// activeKey is user 0x00 expires 0x00 id: a reservation not marked for
// deletion, found by its expiry.
func activeKey(user string, expires time.Time, id string) []byte {
	return pageKey(user, Cursor{Micros: expires.UnixMicro(), ID: id})
}

// Close commits the writes still queued, then closes the database.
func (s *BoltStore) Close() error {
	s.commit.Close()
	return s.db.Close()
}

// update runs fn in a write transaction of the group commit (see
// commit.Group): fn may run more than once and must set, not append to, what
// it reports.
func (s *BoltStore) update(fn func(tx *bolt.Tx) error) error { return s.commit.Update(fn) }

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("decoding %s/%s: %w", "record", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	return b.Put(key, raw)
}

// RegisterNode records a node; registering again changes nothing and
// reports false.
func (s *BoltStore) RegisterNode(_ context.Context, id string, now time.Time) (bool, error) {
	created := false
	err := s.update(func(tx *bolt.Tx) error {
		created = false
		b := tx.Bucket(bucketNodes)
		if b.Get([]byte(id)) != nil {
			return nil
		}
		created = true
		if _, err := tx.Bucket(bucketEvents).CreateBucketIfNotExists([]byte(id)); err != nil {
			return err
		}
		if _, err := tx.Bucket(bucketUndelivered).CreateBucketIfNotExists([]byte(id)); err != nil {
			return err
		}
		return putJSON(b, []byte(id), &NodeRecord{NodeID: id, Registered: now.UTC(), LastSeen: now.UTC()})
	})
	if err != nil {
		return false, fmt.Errorf("registering node %s: %w", id, err)
	}
	return created, nil
}

// Node returns a node's record and its last event sequence number.
func (s *BoltStore) Node(_ context.Context, id string) (*NodeRecord, uint64, error) {
	var rec NodeRecord
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bucketNodes), []byte(id), &rec)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s", ErrUnknownNode, id)
		}
		if eb := tx.Bucket(bucketEvents).Bucket([]byte(id)); eb != nil {
			seq = eb.Sequence()
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return &rec, seq, nil
}

// UpdateNode applies fn to a registered node's record.
func (s *BoltStore) UpdateNode(_ context.Context, id string, fn func(*NodeRecord)) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		var rec NodeRecord
		ok, err := getJSON(b, []byte(id), &rec)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s", ErrUnknownNode, id)
		}
		fn(&rec)
		return putJSON(b, []byte(id), &rec)
	})
}

// publish appends an event carrying raw to node's stream inside tx and
// returns its sequence number.
func publish(tx *bolt.Tx, node string, raw []byte) (uint64, error) {
	eb := tx.Bucket(bucketEvents).Bucket([]byte(node))
	if eb == nil {
		return 0, fmt.Errorf("%w: %s", ErrUnknownNode, node)
	}
	seq, err := eb.NextSequence()
	if err != nil {
		return 0, err
	}
	return seq, eb.Put(seqKey(seq), raw)
}

func newID(b *bolt.Bucket) (string, error) {
	for {
		var buf [8]byte
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("drawing reservation id: %w", err)
		}
		id := hex.EncodeToString(buf[:])
		if b.Get([]byte(id)) == nil {
			return id, nil
		}
	}
}

// CreateReservation assigns r an ID, stores it with its indexes and
// publishes it to its node, in one transaction. It fails with
// ErrUnknownNode or ErrDuplicate (another reservation holds the digest).
func (s *BoltStore) CreateReservation(ctx context.Context, r *provision.Reservation) (uint64, error) {
	return s.CreateReservationWithin(ctx, r, time.Time{}, Quota{})
}

// CreateReservationWithin is CreateReservation under the quota q of r's
// user at now; the count (and, when q limits units, the sum of the units)
// reads the active index in the same transaction as the insert.
func (s *BoltStore) CreateReservationWithin(_ context.Context, r *provision.Reservation, now time.Time, q Quota) (uint64, error) {
	digest := r.Digest()
	check := func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNodes).Get([]byte(r.NodeID)) == nil {
			return fmt.Errorf("%w: %s", ErrUnknownNode, r.NodeID)
		}
		if other := tx.Bucket(bucketDigests).Get([]byte(digest)); other != nil {
			return fmt.Errorf("%w: reservation %s has the same digest %s", ErrDuplicate, other, digest)
		}
		if q.MaxActive <= 0 && !q.PricesUnits() {
			return nil
		}
		n, used, err := activeUse(tx, r.UserID, now, q)
		if err != nil {
			return err
		}
		return q.Check(r.UserID, n, used, r)
	}
	// Refuse in a read transaction first: a write refused inside the
	// group commit makes the group's other writes apply again, so
	// refusals must not reach it in numbers (one caller's flood of
	// refused writes would slow everyone's). The check runs again in the
	// write, where it is atomic with the insert.
	if err := s.db.View(check); err != nil {
		return 0, fmt.Errorf("creating reservation: %w", err)
	}
	var seq uint64
	err := s.update(func(tx *bolt.Tx) error {
		if err := check(tx); err != nil {
			return err
		}
		digests := tx.Bucket(bucketDigests)
		rb := tx.Bucket(bucketReservations)
		id, err := newID(rb)
		if err != nil {
			return err
		}
		r.ID, r.Result, r.Delivered = id, nil, nil
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := rb.Put([]byte(id), raw); err != nil {
			return err
		}
		if err := digests.Put([]byte(digest), []byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUsers).Put(userKey(r.UserID, id), nil); err != nil {
			return err
		}
		if err := indexUser(tx, r); err != nil {
			return err
		}
		if seq, err = publish(tx, r.NodeID, raw); err != nil {
			return err
		}
		ub, err := tx.Bucket(bucketUndelivered).CreateBucketIfNotExists([]byte(r.NodeID))
		if err != nil {
			return err
		}
		return ub.Put(seqKey(seq), []byte(id))
	})
	if err != nil {
		return 0, fmt.Errorf("creating reservation: %w", err)
	}
	return seq, nil
}

// activeUse counts user's reservations that are not marked for deletion
// and expire after now and, when q limits units, sums their units. Without
// a units limit it stops at q.MaxActive: a walk of at most that many keys;
// with one it reads and prices every active reservation of the user (at
// most MaxActive of them when that limit is set).
func activeUse(tx *bolt.Tx, user string, now time.Time, q Quota) (int, provision.Units, error) {
	prefix := append([]byte(user), 0)
	c := tx.Bucket(bucketActive).Cursor()
	n := 0
	var used provision.Units
	price := q.PricesUnits()
	// Expired at now: now after expires, so an entry with expires ≥ now
	// (to the microsecond) is active.
	for k, _ := c.Seek(append(bytes.Clone(prefix), timeKey(now.UnixMicro())...)); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if !price && n >= q.MaxActive {
			break
		}
		n++
		if !price {
			continue
		}
		// user 0x00 expires(8) 0x00 id
		if len(k) <= len(prefix)+8+1 {
			return 0, provision.Units{}, fmt.Errorf("pricing the reservations of %s: active index key %x too short", user, k)
		}
		id := string(k[len(prefix)+8+1:])
		r, err := loadReservation(tx, id)
		if err != nil {
			return 0, provision.Units{}, fmt.Errorf("pricing the reservations of %s: %w", user, err)
		}
		used = used.Add(Units(r))
	}
	return n, used, nil
}

func userKey(user, id string) []byte {
	k := make([]byte, 0, len(user)+1+len(id))
	k = append(k, user...)
	k = append(k, 0)
	return append(k, id...)
}

func loadReservation(tx *bolt.Tx, id string) (*provision.Reservation, error) {
	var r provision.Reservation
	ok, err := getJSON(tx.Bucket(bucketReservations), []byte(id), &r)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: reservation %s", ErrNotFound, id)
	}
	var res provision.Result
	ok, err = getJSON(tx.Bucket(bucketResults), []byte(id), &res)
	if err != nil {
		return nil, err
	}
	if ok {
		r.Result = &res
	}
	r.Delivered = nil
	if raw := tx.Bucket(bucketDelivered).Get([]byte(id)); raw != nil {
		t, err := time.Parse(time.RFC3339Nano, string(raw))
		if err != nil {
			return nil, fmt.Errorf("decoding the delivery time of %s: %w", id, err)
		}
		r.Delivered = &t
	}
	return &r, nil
}

// Reservation returns a reservation with its latest result.
func (s *BoltStore) Reservation(_ context.Context, id string) (*provision.Reservation, error) {
	var r *provision.Reservation
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = loadReservation(tx, id)
		return err
	})
	return r, err
}

// ReservationsOf returns a user's reservations with their results, oldest first.
func (s *BoltStore) ReservationsOf(_ context.Context, user string) ([]*provision.Reservation, error) {
	var list []*provision.Reservation
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := userKey(user, "")
		c := tx.Bucket(bucketUsers).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			r, err := loadReservation(tx, string(k[len(prefix):]))
			if err != nil {
				return err
			}
			list = append(list, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing reservations of %s: %w", user, err)
	}
	SortReservations(list)
	return list, nil
}

// ReservationsPage returns one page of a user's reservations, read from
// the pages index.
func (s *BoltStore) ReservationsPage(_ context.Context, user string, p Page) ([]*provision.Reservation, Cursor, error) {
	var list []*provision.Reservation
	var next Cursor
	err := s.db.View(func(tx *bolt.Tx) error {
		list, next = nil, Cursor{}
		prefix := append([]byte(user), 0)
		c := tx.Bucket(bucketPages).Cursor()
		k, _ := c.Seek(prefix)
		if !p.After.IsZero() {
			after := pageKey(user, p.After)
			if k, _ = c.Seek(after); k != nil && bytes.Equal(k, after) {
				k, _ = c.Next()
			}
		}
		rb, resb := tx.Bucket(bucketReservations), tx.Bucket(bucketResults)
		size := 0
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			id := k[len(prefix)+8+1:]
			size += len(rb.Get(id)) + len(resb.Get(id))
			if p.Full(len(list), size) {
				return nil
			}
			r, err := loadReservation(tx, string(id))
			if err != nil {
				return err
			}
			list = append(list, r)
			next = CursorOf(r)
		}
		next = Cursor{} // the list ended within the page
		return nil
	})
	if err != nil {
		return nil, Cursor{}, fmt.Errorf("listing reservations of %s: %w", user, err)
	}
	return list, next, nil
}

// MarkDelete sets the delete signature of reservation id after check
// accepted it, and publishes the updated reservation to its node. A repeat
// of the same signed delete changes nothing and publishes nothing (seq 0).
func (s *BoltStore) MarkDelete(_ context.Context, id string, check func(*provision.Reservation) error) (*provision.Reservation, uint64, error) {
	// Refused deletes (not the owner, a bad signature) are refused in a
	// read transaction, out of the group commit (see CreateReservationWithin).
	err := s.db.View(func(tx *bolt.Tx) error {
		r, err := loadReservation(tx, id)
		if err != nil {
			return err
		}
		return check(r)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("deleting reservation %s: %w", id, err)
	}
	var r *provision.Reservation
	var seq uint64
	err = s.update(func(tx *bolt.Tx) error {
		seq = 0
		var err error
		if r, err = loadReservation(tx, id); err != nil {
			return err
		}
		before := *r
		if err := check(r); err != nil {
			return err
		}
		if before.ToDelete && before.DeleteSignature == r.DeleteSignature {
			return nil
		}
		result, delivered := r.Result, r.Delivered
		r.Result, r.Delivered = nil, nil
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		r.Result, r.Delivered = result, delivered
		if err := tx.Bucket(bucketReservations).Put([]byte(id), raw); err != nil {
			return err
		}
		if !before.ToDelete && r.ToDelete {
			if err := tx.Bucket(bucketActive).Delete(activeKey(r.UserID, r.Expires(), r.ID)); err != nil {
				return err
			}
		}
		seq, err = publish(tx, r.NodeID, raw)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("deleting reservation %s: %w", id, err)
	}
	return r, seq, nil
}

// UpdateReservation replaces reservation id by next, its next version,
// once check accepted the stored version: next's digest must be held by no
// reservation (ErrDuplicate), the old digest stays held (a replay of the
// old version stays refused), the stored result is dropped (it answered
// the old version) and next is published to its node, which has not had
// it yet; all in one transaction.
func (s *BoltStore) UpdateReservation(ctx context.Context, id string, next *provision.Reservation, check func(cur *provision.Reservation) error) (uint64, error) {
	return s.UpdateReservationWithin(ctx, id, next, time.Time{}, Quota{}, check)
}

// UpdateReservationWithin is UpdateReservation under the quota q of the
// user at now: the sum of the units of the user's active reservations
// reads the active index in the same transaction as the write.
func (s *BoltStore) UpdateReservationWithin(_ context.Context, id string, next *provision.Reservation, now time.Time, q Quota, check func(cur *provision.Reservation) error) (uint64, error) {
	digest := next.Digest()
	verify := func(tx *bolt.Tx) (*provision.Reservation, error) {
		cur, err := loadReservation(tx, id)
		if err != nil {
			return nil, err
		}
		if err := check(cur); err != nil {
			return nil, err
		}
		if q.PricesUnits() {
			_, used, err := activeUse(tx, cur.UserID, now, q)
			if err != nil {
				return nil, err
			}
			if err := q.CheckUpdate(cur.UserID, used, now, cur, next); err != nil {
				return nil, err
			}
		}
		if other := tx.Bucket(bucketDigests).Get([]byte(digest)); other != nil {
			return nil, fmt.Errorf("%w: reservation %s has the same digest %s", ErrDuplicate, other, digest)
		}
		return cur, nil
	}
	// Refused updates are refused in a read transaction, out of the
	// group commit (see CreateReservationWithin).
	if err := s.db.View(func(tx *bolt.Tx) error { _, err := verify(tx); return err }); err != nil {
		return 0, fmt.Errorf("updating reservation %s: %w", id, err)
	}
	var seq uint64
	err := s.update(func(tx *bolt.Tx) error {
		seq = 0
		cur, err := verify(tx)
		if err != nil {
			return err
		}
		n := *next
		n.ID, n.Result, n.Delivered = id, nil, nil
		raw, err := json.Marshal(&n)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketReservations).Put([]byte(id), raw); err != nil {
			return err
		}
		if err := tx.Bucket(bucketDigests).Put([]byte(digest), []byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketSuperseded).Put(userKey(id, cur.Digest()), nil); err != nil {
			return err
		}
		for _, del := range []struct {
			bucket []byte
			key    []byte
		}{
			{bucketResults, []byte(id)},
			{bucketDelivered, []byte(id)},
			{bucketActive, activeKey(cur.UserID, cur.Expires(), id)},
		} {
			if err := tx.Bucket(del.bucket).Delete(del.key); err != nil {
				return err
			}
		}
		if err := indexUser(tx, &n); err != nil {
			return err
		}
		if seq, err = publish(tx, n.NodeID, raw); err != nil {
			return err
		}
		ub, err := tx.Bucket(bucketUndelivered).CreateBucketIfNotExists([]byte(n.NodeID))
		if err != nil {
			return err
		}
		return ub.Put(seqKey(seq), []byte(id))
	})
	if err != nil {
		return 0, fmt.Errorf("updating reservation %s: %w", id, err)
	}
	return seq, nil
}

// dropSuperseded removes the digests of the replaced versions of id.
func dropSuperseded(tx *bolt.Tx, id string) error {
	sb, digests := tx.Bucket(bucketSuperseded), tx.Bucket(bucketDigests)
	prefix := userKey(id, "")
	var keys [][]byte
	c := sb.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		d := k[len(prefix):]
		if string(digests.Get(d)) == id {
			if err := digests.Delete(d); err != nil {
				return err
			}
		}
		if err := sb.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// newerResult reads the reservation res answers, runs check on it and
// reports whether res is to be stored: false for a repeat of the stored
// result or an older one. It writes nothing.
func newerResult(tx *bolt.Tx, res *provision.Result, check func(*provision.Reservation) error) (bool, error) {
	r, err := loadReservation(tx, res.ID)
	if err != nil {
		return false, err
	}
	if err := check(r); err != nil {
		return false, err
	}
	return Supersedes(r.Result, res), nil
}

// PutResults stores a batch of a node's results in one transaction:
// check(i) is the check of rs[i], and a nil rs[i] is skipped. It returns,
// per result, whether it was stored and why it was refused (nil when stored
// or acknowledged as a repeat); err is set only when the transaction as a
// whole failed, and then nothing was stored.
func (s *BoltStore) PutResults(_ context.Context, rs []*provision.Result, check func(i int, r *provision.Reservation) error) (stored []bool, errs []error, err error) {
	stored, errs = make([]bool, len(rs)), make([]error, len(rs))
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketResults)
		for i, res := range rs {
			stored[i], errs[i] = false, nil
			if res == nil {
				continue
			}
			newer, err := newerResult(tx, res, func(r *provision.Reservation) error { return check(i, r) })
			if err != nil {
				errs[i] = fmt.Errorf("storing result of %s: %w", res.ID, err)
				continue
			}
			if newer {
				if err := putJSON(b, []byte(res.ID), res); err != nil {
					return fmt.Errorf("storing result of %s: %w", res.ID, err)
				}
				stored[i] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("storing %d results: %w", len(rs), err)
	}
	return stored, errs, nil
}

// Events returns up to limit events of node after from, and the cursor to
// ask from next. bbolt keeps every event, so no cursor is ever gone.
func (s *BoltStore) Events(_ context.Context, node string, from uint64, limit int) ([]explorer.WireEvent, uint64, error) {
	var evs []explorer.WireEvent
	next := from
	err := s.db.View(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketEvents).Bucket([]byte(node))
		if eb == nil {
			return fmt.Errorf("%w: %s", ErrUnknownNode, node)
		}
		if from >= eb.Sequence() {
			return nil
		}
		c := eb.Cursor()
		for k, v := c.Seek(seqKey(from + 1)); k != nil && len(evs) < limit; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			evs = append(evs, explorer.WireEvent{Seq: seq, Reservation: bytes.Clone(v)})
			next = seq
		}
		return nil
	})
	if err != nil {
		return nil, from, fmt.Errorf("reading events of %s: %w", node, err)
	}
	return evs, next, nil
}

// MarkDelivered marks delivered, at now, node's reservations created by an
// event at or below upTo.
func (s *BoltStore) MarkDelivered(_ context.Context, node string, upTo uint64, now time.Time) ([]Delivery, error) {
	var out []Delivery
	// Most polls have nothing new to mark: a read transaction finds out
	// without a commit (and its fsync).
	pending := false
	if err := s.db.View(func(tx *bolt.Tx) error {
		if ub := tx.Bucket(bucketUndelivered).Bucket([]byte(node)); ub != nil {
			k, _ := ub.Cursor().First()
			pending = k != nil && binary.BigEndian.Uint64(k) <= upTo
		}
		return nil
	}); err != nil || !pending {
		return nil, err
	}
	stamp := []byte(now.UTC().Format(time.RFC3339Nano))
	err := s.update(func(tx *bolt.Tx) error {
		out = nil
		ub := tx.Bucket(bucketUndelivered).Bucket([]byte(node))
		if ub == nil {
			return nil // an unknown node has nothing to deliver
		}
		db := tx.Bucket(bucketDelivered)
		var done [][]byte
		c := ub.Cursor()
		for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upTo; k, v = c.Next() {
			done = append(done, bytes.Clone(k))
			var r provision.Reservation
			ok, err := getJSON(tx.Bucket(bucketReservations), v, &r)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if err := db.Put(v, stamp); err != nil {
				return err
			}
			out = append(out, Delivery{ID: r.ID, UserID: r.UserID})
		}
		for _, k := range done {
			if err := ub.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("marking the events of %s delivered up to %d: %w", node, upTo, err)
	}
	return out, nil
}

// InjectEvent publishes raw to node without any check.
func (s *BoltStore) InjectEvent(_ context.Context, node string, raw []byte) (uint64, error) {
	var seq uint64
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		seq, err = publish(tx, node, raw)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("injecting event for %s: %w", node, err)
	}
	return seq, nil
}

// State returns node's active reservations as of its last event. bbolt
// keeps every event, so the node's event stream names every reservation it
// was ever sent; the stored reservation says whether it is still active.
func (s *BoltStore) State(_ context.Context, node string, now time.Time) (*explorer.NodeState, error) {
	st := &explorer.NodeState{NodeID: node, Reservations: []explorer.StateEntry{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketEvents).Bucket([]byte(node))
		if eb == nil {
			return fmt.Errorf("%w: %s", ErrUnknownNode, node)
		}
		st.Seq = eb.Sequence()
		seen := map[string]bool{}
		return eb.ForEach(func(_, v []byte) error {
			var ev struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(v, &ev) != nil || ev.ID == "" || seen[ev.ID] {
				return nil // an injected undecodable event names no reservation
			}
			seen[ev.ID] = true
			r, err := loadReservation(tx, ev.ID)
			if errors.Is(err, ErrNotFound) || (err == nil && r.NodeID != node) {
				return nil
			}
			if err != nil {
				return err
			}
			if Active(r, now) {
				st.Reservations = append(st.Reservations, explorer.StateEntry{ID: r.ID, Digest: r.Digest(), Version: r.Version})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("reading the state of %s: %w", node, err)
	}
	SortState(st)
	return st, nil
}

// Nodes returns up to q.Limit nodes that pass q's filters, by ID after
// q.After. It reads the node records in key order and decodes each: a scan
// of the nodes bucket, which a fleet of thousands of nodes keeps in a few
// MiB.
func (s *BoltStore) Nodes(_ context.Context, q NodeQuery) ([]*NodeRecord, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	var list []*NodeRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketNodes).Cursor()
		k, v := c.First()
		if q.After != "" {
			k, v = c.Seek([]byte(q.After))
			if k != nil && string(k) == q.After {
				k, v = c.Next()
			}
		}
		for ; k != nil && len(list) < q.Limit; k, v = c.Next() {
			var rec NodeRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decoding node %s: %w", k, err)
			}
			if q.Keep(&rec) {
				list = append(list, &rec)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	return list, nil
}

// TouchNodes raises the stored LastSeen of each registered node in seen.
func (s *BoltStore) TouchNodes(_ context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		for id, at := range seen {
			var rec NodeRecord
			ok, err := getJSON(b, []byte(id), &rec)
			if err != nil {
				return err
			}
			if !ok || !at.After(rec.LastSeen) {
				continue
			}
			rec.LastSeen = at.UTC()
			if err := putJSON(b, []byte(id), &rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing when %d nodes were last seen: %w", len(seen), err)
	}
	return nil
}

// NodeReservations returns up to limit of node's reservations, the last
// submitted first. bbolt has no index by node: the node's event stream,
// read from its end, names its reservations in that order (a delete's
// event, to_delete set, names an older one again: it is skipped); the
// walk stops after limit of them or 8×limit events.
func (s *BoltStore) NodeReservations(_ context.Context, node string, limit int) ([]*provision.Reservation, error) {
	var out []*provision.Reservation
	err := s.db.View(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketEvents).Bucket([]byte(node))
		if eb == nil {
			return nil
		}
		seen := map[string]bool{}
		c := eb.Cursor()
		n := 0
		for k, v := c.Last(); k != nil && len(out) < limit && n < 8*limit; k, v = c.Prev() {
			n++
			var ev struct {
				ID       string `json:"id"`
				ToDelete bool   `json:"to_delete"`
			}
			if json.Unmarshal(v, &ev) != nil || ev.ID == "" || ev.ToDelete || seen[ev.ID] {
				continue
			}
			seen[ev.ID] = true
			r, err := loadReservation(tx, ev.ID)
			if errors.Is(err, ErrNotFound) || (err == nil && r.NodeID != node) {
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the reservations of %s: %w", node, err)
	}
	return out, nil
}

// Expire deletes the reservations that expired before cutoff, with their
// results and every index entry (digest, user, pages, active, delivered),
// in one transaction. It
// reads every reservation (the bucket has no expiry index): the server runs
// it every Config.ExpireInterval. The node's events keep their copy of the
// reservation (bbolt keeps every event); State skips what is gone.
func (s *BoltStore) Expire(_ context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := s.update(func(tx *bolt.Tx) error {
		n = 0
		var list []*provision.Reservation
		err := tx.Bucket(bucketReservations).ForEach(func(k, v []byte) error {
			var r provision.Reservation
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decoding reservation %s: %w", k, err)
			}
			if r.Expires().Before(cutoff) {
				r.ID = string(k)
				list = append(list, &r)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range list {
			for _, del := range []struct {
				bucket []byte
				key    []byte
			}{
				{bucketReservations, []byte(r.ID)},
				{bucketResults, []byte(r.ID)},
				{bucketUsers, userKey(r.UserID, r.ID)},
				{bucketDelivered, []byte(r.ID)},
				{bucketPages, pageKey(r.UserID, CursorOf(r))},
				{bucketActive, activeKey(r.UserID, r.Expires(), r.ID)},
			} {
				if err := tx.Bucket(del.bucket).Delete(del.key); err != nil {
					return err
				}
			}
			digests, digest := tx.Bucket(bucketDigests), r.Digest()
			if string(digests.Get([]byte(digest))) == r.ID {
				if err := digests.Delete([]byte(digest)); err != nil {
					return err
				}
			}
			if err := dropSuperseded(tx, r.ID); err != nil {
				return err
			}
		}
		n = int64(len(list))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("deleting reservations expired before %s: %w", cutoff.UTC().Format(time.RFC3339), err)
	}
	return n, nil
}
