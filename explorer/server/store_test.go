package server_test

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/storetest"
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
