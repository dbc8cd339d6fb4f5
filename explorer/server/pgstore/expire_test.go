package pgstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/pgstore"
	"github.com/edgeprov/provisiond/internal/pgtest"
)

// TestExpireOneReplicaAtATime: while another replica holds the expiry
// lock, Expire deletes nothing; once it is free, it deletes what expired.
func TestExpireOneReplicaAtATime(t *testing.T) {
	dsn := pgtest.Shared(t).NewDB(t)
	st, err := pgstore.Open(t.Context(), pgstore.Config{URL: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	if _, err := st.RegisterNode(t.Context(), nodeID, time.Now()); err != nil {
		t.Fatal(err)
	}
	r := explorertest.Volume(nodeID, 1)
	r.Created, r.Duration = r.Created.Add(-2*time.Hour), time.Hour
	r.Sign(user)
	if _, err := st.CreateReservation(t.Context(), r); err != nil {
		t.Fatal(err)
	}

	const lockExpire = int64(0x70727600_00000003)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), "select pg_advisory_lock($1)", lockExpire); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Expire(t.Context(), time.Now()); err != nil || n != 0 {
		t.Fatalf("expire while another replica holds the lock: %d, %v; want 0", n, err)
	}
	if _, err := st.Reservation(t.Context(), r.ID); err != nil {
		t.Fatalf("the reservation went while the lock was held: %v", err)
	}
	if _, err := conn.Exec(t.Context(), "select pg_advisory_unlock($1)", lockExpire); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Expire(t.Context(), time.Now()); err != nil || n != 1 {
		t.Fatalf("expire: %d, %v; want 1", n, err)
	}
	if _, err := st.Reservation(t.Context(), r.ID); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("the expired reservation: %v, want ErrNotFound", err)
	}
}
