package server_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/storetest"
	"github.com/edgeprov/provisiond/provision"
)

func TestBoltStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) server.Store {
		s, err := server.OpenBolt(t.TempDir(), true)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestBoltMigrate1to2 opens a schema-1 database: its reservations, which
// have no delivery record, are marked delivered by the node's next poll.
func TestBoltMigrate1to2(t *testing.T) {
	dir := t.TempDir()
	s, err := server.OpenBolt(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	key, user := explorertest.NewKey(t), explorertest.NewKey(t)
	node := explorertest.NodeID(key)
	ctx := t.Context()
	if _, err := s.RegisterNode(ctx, node, time.Now()); err != nil {
		t.Fatal(err)
	}
	r := explorertest.Volume(node, 1)
	r.Sign(user)
	seq, err := s.CreateReservation(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Make it schema 1: no delivery buckets.
	db, err := bolt.Open(filepath.Join(dir, "explorer.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{"undelivered", "delivered"} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err = server.OpenBolt(dir, true)
	if err != nil {
		t.Fatalf("opening schema 1: %v", err)
	}
	defer s.Close()
	at := time.Now().UTC()
	ds, err := s.MarkDelivered(ctx, node, seq, at)
	if err != nil || len(ds) != 1 || ds[0].ID != r.ID {
		t.Fatalf("marked %v, %v; want %s", ds, err, r.ID)
	}
	got, err := s.Reservation(ctx, r.ID)
	if err != nil || got.Delivered == nil || !got.Delivered.Equal(at) {
		t.Fatalf("delivered %v, %v; want %v", got.Delivered, err, at)
	}
}

// TestBoltMigrateV1: a schema 1 database (no pages, active or delivery
// index) is brought to the current schema on open, its reservations listed in pages and counted
// by the quota, a deleted one not.
func TestBoltMigrateV1(t *testing.T) {
	dir := t.TempDir()
	node := explorertest.NewKey(t)
	user := explorertest.NewKey(t)
	var rs []*provision.Reservation
	for i := range 3 {
		r := explorertest.Volume(explorertest.NodeID(node), int64(i+1))
		r.Created = r.Created.Add(time.Duration(i) * time.Second)
		r.ID = fmt.Sprintf("%016x", i+1)
		r.ToDelete = i == 2
		r.Sign(user)
		rs = append(rs, r)
	}
	db, err := bolt.Open(filepath.Join(dir, "explorer.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{"meta", "nodes", "reservations", "results", "digests", "users", "events"} {
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		if err := tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("1")); err != nil {
			return err
		}
		nid := explorertest.NodeID(node)
		if err := tx.Bucket([]byte("nodes")).Put([]byte(nid), []byte(`{"node_id":"`+nid+`"}`)); err != nil {
			return err
		}
		if _, err := tx.Bucket([]byte("events")).CreateBucket([]byte(nid)); err != nil {
			return err
		}
		for _, r := range rs {
			raw, _ := json.Marshal(r)
			if err := tx.Bucket([]byte("reservations")).Put([]byte(r.ID), raw); err != nil {
				return err
			}
			if err := tx.Bucket([]byte("digests")).Put([]byte(r.Digest()), []byte(r.ID)); err != nil {
				return err
			}
			if err := tx.Bucket([]byte("users")).Put([]byte(r.UserID+"\x00"+r.ID), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := server.OpenBolt(dir, true)
	if err != nil {
		t.Fatalf("opening a schema 1 database: %v", err)
	}
	defer s.Close()
	list, next, err := s.ReservationsPage(t.Context(), explorertest.UserID(user), server.Page{Limit: 10})
	if err != nil || len(list) != 3 || !next.IsZero() {
		t.Fatalf("pages after the migration: %d, %v, %v", len(list), next, err)
	}
	for i, r := range list {
		if r.ID != rs[i].ID {
			t.Fatalf("reservation %d is %s, want %s", i, r.ID, rs[i].ID)
		}
	}
	// Two active (the third is deleted): a quota of 3 takes one more.
	more := explorertest.Volume(explorertest.NodeID(node), 10)
	more.Sign(user)
	if _, err := s.CreateReservationWithin(t.Context(), more, time.Now(), server.Quota{MaxActive: 3}); err != nil {
		t.Fatalf("the third active of 3: %v", err)
	}
	again := explorertest.Volume(explorertest.NodeID(node), 11)
	again.Sign(user)
	if _, err := s.CreateReservationWithin(t.Context(), again, time.Now(), server.Quota{MaxActive: 3}); !errors.Is(err, server.ErrQuota) {
		t.Fatalf("the fourth active of 3: %v, want ErrQuota", err)
	}
}
