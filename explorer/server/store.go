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
const schemaVersion = "1"

var (
	bucketMeta         = []byte("meta")
	bucketNodes        = []byte("nodes")
	bucketReservations = []byte("reservations")
	bucketResults      = []byte("results")
	bucketDigests      = []byte("digests")
	bucketUsers        = []byte("users")
	bucketEvents       = []byte("events")
	keyVersion         = []byte("version")
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
		for _, b := range [][]byte{bucketMeta, bucketNodes, bucketReservations, bucketResults, bucketDigests, bucketUsers, bucketEvents} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keyVersion); {
		case v == nil:
			return meta.Put(keyVersion, []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("%w: database schema %q, this explorerd knows %q", ErrSchema, v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising %s: %w", path, err)
	}
	return &BoltStore{db: db, commit: commit.NewGroup(db)}, nil
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
func (s *BoltStore) CreateReservation(_ context.Context, r *provision.Reservation) (uint64, error) {
	digest := r.Digest()
	var seq uint64
	err := s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNodes).Get([]byte(r.NodeID)) == nil {
			return fmt.Errorf("%w: %s", ErrUnknownNode, r.NodeID)
		}
		digests := tx.Bucket(bucketDigests)
		if other := digests.Get([]byte(digest)); other != nil {
			return fmt.Errorf("%w: reservation %s has the same digest %s", ErrDuplicate, other, digest)
		}
		rb := tx.Bucket(bucketReservations)
		id, err := newID(rb)
		if err != nil {
			return err
		}
		r.ID, r.Result = id, nil
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
		seq, err = publish(tx, r.NodeID, raw)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("creating reservation: %w", err)
	}
	return seq, nil
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

// MarkDelete sets the delete signature of reservation id after check
// accepted it, and publishes the updated reservation to its node. A repeat
// of the same signed delete changes nothing and publishes nothing (seq 0).
func (s *BoltStore) MarkDelete(_ context.Context, id string, check func(*provision.Reservation) error) (*provision.Reservation, uint64, error) {
	var r *provision.Reservation
	var seq uint64
	err := s.update(func(tx *bolt.Tx) error {
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
		result := r.Result
		r.Result = nil
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		r.Result = result
		if err := tx.Bucket(bucketReservations).Put([]byte(id), raw); err != nil {
			return err
		}
		seq, err = publish(tx, r.NodeID, raw)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("deleting reservation %s: %w", id, err)
	}
	return r, seq, nil
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

// Expire deletes the reservations that expired before cutoff, with their
// results and their digest and user index entries, in one transaction. It
// reads every reservation (the bucket has no expiry index): the server runs
// it every Config.ExpireInterval. The node's events keep their copy of the
// reservation (bbolt keeps every event); State skips what is gone.
func (s *BoltStore) Expire(_ context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := s.update(func(tx *bolt.Tx) error {
		n = 0
		type gone struct{ id, user, digest string }
		var list []gone
		err := tx.Bucket(bucketReservations).ForEach(func(k, v []byte) error {
			var r provision.Reservation
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decoding reservation %s: %w", k, err)
			}
			if r.Expires().Before(cutoff) {
				list = append(list, gone{string(k), r.UserID, r.Digest()})
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, g := range list {
			for _, del := range []struct {
				bucket []byte
				key    []byte
			}{
				{bucketReservations, []byte(g.id)},
				{bucketResults, []byte(g.id)},
				{bucketUsers, userKey(g.user, g.id)},
			} {
				if err := tx.Bucket(del.bucket).Delete(del.key); err != nil {
					return err
				}
			}
			digests := tx.Bucket(bucketDigests)
			if string(digests.Get([]byte(g.digest))) == g.id {
				if err := digests.Delete([]byte(g.digest)); err != nil {
					return err
				}
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
