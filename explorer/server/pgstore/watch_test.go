package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/pgstore"
	"github.com/edgeprov/provisiond/internal/pgtest"
	"github.com/edgeprov/provisiond/provision"
)

// TestWatchAcrossReplicas: a user watches a reservation on one replica
// while the node talks to another; the delivery and the result stored
// through the second wake the watch held on the first, by NOTIFY.
func TestWatchAcrossReplicas(t *testing.T) {
	url := pgtest.Shared(t).NewDB(t)
	held := make(chan string, 16)
	replica := func(onWatch func(string)) *explorertest.Server {
		st, err := pgstore.Open(t.Context(), pgstore.Config{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		return explorertest.NewWithConfig(t, server.Config{Store: st, OnWatch: onWatch})
	}
	a := replica(func(topic string) { held <- topic })
	b := replica(nil)
	nodeKey, userKey := explorertest.NewKey(t), explorertest.NewKey(t)
	node := explorertest.NodeID(nodeKey)
	nc := b.RegisterNode(t, nodeKey)
	uc := a.UserClient(userKey)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	id := a.Reserve(t, userKey, explorertest.Volume(node, 1))

	r, err := uc.WaitReservation(ctx, id, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	watch := func(r *provision.Reservation) <-chan *provision.Reservation {
		done := make(chan *provision.Reservation, 1)
		go func() {
			got, err := uc.WaitReservation(ctx, id, explorer.ChangeToken(r), 30*time.Second)
			if err != nil {
				t.Error(err)
			}
			done <- got
		}()
		select {
		case topic := <-held:
			if topic != server.ReservationTopic(id) {
				t.Fatalf("held on %s", topic)
			}
		case <-ctx.Done():
			t.Fatal("the watch was never held")
		}
		return done
	}
	wait := func(done <-chan *provision.Reservation, what string) *provision.Reservation {
		t.Helper()
		start := time.Now()
		select {
		case got := <-done:
			t.Logf("%s woke the other replica's watch in %s", what, time.Since(start))
			if got == nil {
				t.FailNow()
			}
			return got
		case <-ctx.Done():
			t.Fatalf("%s on replica b never woke the watch on replica a", what)
			return nil
		}
	}

	done := watch(r)
	evs, next, err := nc.Poll(ctx, 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("poll: %v, %d events", err, len(evs))
	}
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	go nc.Poll(pctx, next)
	r = wait(done, "the delivery")
	if r.Delivered == nil {
		t.Fatal("woke without a delivery")
	}

	done = watch(r)
	res := &provision.Result{Type: r.Type, ID: id, NodeID: node, Digest: r.Digest(), Created: time.Now().UTC(), State: provision.StateOk}
	if err := res.Sign(provision.KeySigner(nodeKey)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Feedback(ctx, node, res); err != nil {
		t.Fatal(err)
	}
	if r = wait(done, "the result"); r.Result == nil || r.Result.Signature != res.Signature {
		t.Fatalf("woke with result %+v", r.Result)
	}
}
