package pgstore

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/internal/pgtest"
)

// TestMigrate1to2 opens a database of schema 1 holding a reservation: the
// migration keeps it, it has no delivery yet, and the node's next poll
// marks it delivered; it is listed on its node's page.
func TestMigrate1to2(t *testing.T) {
	ctx := t.Context()
	url := pgtest.Shared(t).NewDB(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		if done, err = migrateOne(ctx, conn.Conn(), ms[:1]); err != nil {
			t.Fatal(err)
		}
	}
	conn.Release()

	nodeKey, user := explorertest.NewKey(t), explorertest.NewKey(t)
	node := explorertest.NodeID(nodeKey)
	rec, _ := json.Marshal(&server.NodeRecord{NodeID: node, Registered: time.Now().UTC()})
	r := explorertest.Volume(node, 1)
	r.ID = "00112233aabbccdd"
	r.Sign(user)
	body, _ := json.Marshal(r)
	if _, err := pool.Exec(ctx, "insert into nodes (id, record, last_seq) values ($1, $2, 1)", node, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `insert into reservations (id, node_id, user_id, digest, created, expires, version, body)
		values ($1, $2, $3, $4, $5, $6, 0, $7)`, r.ID, node, r.UserID, r.Digest(), r.Created, r.Expires(), body); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "insert into events (node_id, seq, reservation) values ($1, 1, $2)", node, body); err != nil {
		t.Fatal(err)
	}
	pool.Close()

	s, err := Open(ctx, Config{URL: url})
	if err != nil {
		t.Fatalf("opening schema 1: %v", err)
	}
	defer s.Close()
	got, err := s.Reservation(ctx, r.ID)
	if err != nil || got.Delivered != nil || got.Digest() != r.Digest() {
		t.Fatalf("after the migration: %v, delivered %v", err, got.Delivered)
	}
	at := time.Now().UTC().Truncate(time.Microsecond)
	ds, err := s.MarkDelivered(ctx, node, 1, at)
	if err != nil || len(ds) != 1 || ds[0].ID != r.ID || ds[0].UserID != r.UserID {
		t.Fatalf("marked %v, %v", ds, err)
	}
	if got, err = s.Reservation(ctx, r.ID); err != nil || got.Delivered == nil || !got.Delivered.Equal(at) {
		t.Fatalf("delivered %v, %v; want %v", got.Delivered, err, at)
	}
	list, err := s.NodeReservations(ctx, node, 10)
	if err != nil || len(list) != 1 || list[0].ID != r.ID {
		t.Fatalf("node reservations: %v %d", err, len(list))
	}
}
