package server_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// logWatch is a log writer that signals each line containing want.
type logWatch struct {
	want []byte
	mu   sync.Mutex
	hits chan struct{}
}

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.Contains(p, w.want) {
		select {
		case w.hits <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// TestExpireJob starts a server on a store holding a reservation expired
// beyond the retention, one expired within it and an active one: the
// expiry job, run at start, deletes the first only.
func TestExpireJob(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	st, err := server.OpenBolt(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	now := time.Now().UTC().Truncate(time.Second)
	if _, err := st.RegisterNode(ctx, nodeID, now); err != nil {
		t.Fatal(err)
	}
	reserve := func(size int64, created time.Time, d time.Duration) *provision.Reservation {
		r := explorertest.Volume(nodeID, size)
		r.Created, r.Duration = created, d
		r.Sign(user)
		if _, err := st.CreateReservation(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	old := reserve(1, now.Add(-3*time.Hour), time.Hour)          // expired 2h ago
	recent := reserve(2, now.Add(-3*time.Hour), 150*time.Minute) // expired 30m ago
	active := reserve(3, now, time.Hour)

	w := &logWatch{want: []byte("expired reservations deleted"), hits: make(chan struct{}, 1)}
	srv, err := server.New(server.Config{
		Store:                st,
		Logger:               zerolog.New(w),
		ReservationRetention: time.Hour,
		ExpireInterval:       time.Hour,
	})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	select {
	case <-w.hits:
	case <-time.After(10 * time.Second):
		t.Fatal("the expiry job deleted nothing")
	}
	if _, err := st.Reservation(ctx, old.ID); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("the reservation expired beyond the retention: %v, want ErrNotFound", err)
	}
	for _, r := range []*provision.Reservation{recent, active} {
		if _, err := st.Reservation(ctx, r.ID); err != nil {
			t.Fatalf("reservation %s within the retention or active: %v", r.ID, err)
		}
	}
	state, err := st.State(ctx, nodeID, now)
	if err != nil || len(state.Reservations) != 1 || state.Reservations[0].ID != active.ID {
		t.Fatalf("state %+v, %v: want the active reservation alone", state, err)
	}
}
