package server

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/explorer"
)

// The BoltStore's FleetStore: two buckets made at their first write (see
// doc.go), so a database of schema 3 needs no migration.
var (
	bucketAvailability = []byte("availability") // node ID → Availability JSON
	bucketLogs         = []byte("logs")         // request name → LogRecord JSON
)

var _ FleetStore = (*BoltStore)(nil)

// UpdateAvailability applies fn to node's availability record and stores
// it, in one transaction.
func (s *BoltStore) UpdateAvailability(_ context.Context, node string, fn func(*Availability) error) error {
	return s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNodes).Get([]byte(node)) == nil {
			return fmt.Errorf("%w: %s", ErrUnknownNode, node)
		}
		b, err := tx.CreateBucketIfNotExists(bucketAvailability)
		if err != nil {
			return err
		}
		var a Availability
		if _, err := getJSON(b, []byte(node), &a); err != nil {
			return err
		}
		if err := fn(&a); err != nil {
			return err
		}
		return putJSON(b, []byte(node), &a)
	})
}

// Availabilities returns the availability records of nodes that have one.
func (s *BoltStore) Availabilities(_ context.Context, nodes []string) (map[string]*Availability, error) {
	out := map[string]*Availability{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAvailability)
		if b == nil {
			return nil
		}
		for _, n := range nodes {
			var a Availability
			ok, err := getJSON(b, []byte(n), &a)
			if err != nil {
				return err
			}
			if ok {
				out[n] = &a
			}
		}
		return nil
	})
	return out, err
}

// PutLogRequest stores a new log request under the user's count.
func (s *BoltStore) PutLogRequest(_ context.Context, rec *LogRecord, maxPerUser int, now time.Time) error {
	return s.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketLogs)
		if err != nil {
			return err
		}
		if b.Get([]byte(rec.Name)) != nil {
			return fmt.Errorf("%w: log request %s", ErrDuplicate, rec.Name)
		}
		kept := 0
		err = b.ForEach(func(_, v []byte) error {
			var l LogRecord
			if err := jsonDecode(v, &l); err != nil {
				return err
			}
			if l.Request.UserID == rec.Request.UserID && now.Before(l.Expires) {
				kept++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if maxPerUser > 0 && kept >= maxPerUser {
			return fmt.Errorf("%w: user %s has %d log requests", ErrTooMany, rec.Request.UserID, kept)
		}
		return putJSON(b, []byte(rec.Name), rec)
	})
}

// scanLogs calls fn for every kept log request.
func (s *BoltStore) scanLogs(fn func(*LogRecord)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var l LogRecord
			if err := jsonDecode(v, &l); err != nil {
				return err
			}
			fn(&l)
			return nil
		})
	})
}

// PendingLogRequests returns node's unanswered requests still honoured at
// now, oldest first.
func (s *BoltStore) PendingLogRequests(_ context.Context, node string, now time.Time, limit int) ([]*LogRecord, error) {
	var out []*LogRecord
	err := s.scanLogs(func(l *LogRecord) {
		if l.Request.NodeID == node && l.Pending(now) {
			out = append(out, l)
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Request.Created.Before(out[j].Request.Created) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, err
}

// AnswerLogRequest stores node's answer to request name.
func (s *BoltStore) AnswerLogRequest(_ context.Context, node, name string, reply *explorer.LogReply, now time.Time) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		var l LogRecord
		if b == nil {
			return fmt.Errorf("%w: log request %s", ErrNotFound, name)
		}
		ok, err := getJSON(b, []byte(name), &l)
		if err != nil {
			return err
		}
		if !ok || !now.Before(l.Expires) {
			return fmt.Errorf("%w: log request %s", ErrNotFound, name)
		}
		if l.Request.NodeID != node {
			return fmt.Errorf("%w: log request %s is for node %s", ErrForbidden, name, l.Request.NodeID)
		}
		if l.Answered != nil {
			return nil
		}
		at := now.UTC()
		l.Answered, l.Reply = &at, reply
		return putJSON(b, []byte(name), &l)
	})
}

// LogRecord returns request name with its answer.
func (s *BoltStore) LogRecord(_ context.Context, name string, now time.Time) (*LogRecord, error) {
	var l LogRecord
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		if b == nil {
			return nil
		}
		var err error
		ok, err = getJSON(b, []byte(name), &l)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !ok || !now.Before(l.Expires) {
		return nil, fmt.Errorf("%w: log request %s", ErrNotFound, name)
	}
	return &l, nil
}

// ExpireLogs deletes the requests expired at now.
func (s *BoltStore) ExpireLogs(_ context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.update(func(tx *bolt.Tx) error {
		n = 0
		b := tx.Bucket(bucketLogs)
		if b == nil {
			return nil
		}
		var gone [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var l LogRecord
			if err := jsonDecode(v, &l); err != nil || !now.Before(l.Expires) {
				gone = append(gone, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range gone {
			if err := b.Delete(k); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// jsonDecode decodes a stored record.
func jsonDecode(raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decoding a stored record: %w", err)
	}
	return nil
}
