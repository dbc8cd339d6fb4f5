package server_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// watches returns a server config whose OnWatch reports held watches.
func watches() (server.Config, <-chan string) {
	ch := make(chan string, 16)
	return server.Config{OnWatch: func(topic string) { ch <- topic }}, ch
}

func awaitWatch(t testing.TB, ch <-chan string, topic string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != topic {
			t.Fatalf("watch held on %s, want %s", got, topic)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch was never held")
	}
}

type watchResult struct {
	r   *provision.Reservation
	err error
	at  time.Time
}

// TestWatchWakesOnDeliveryAndResult follows a reservation as a user sees
// it through the long-poll: delivered when the node polls past its event,
// then its result, each answered as soon as it is stored.
func TestWatchWakesOnDeliveryAndResult(t *testing.T) {
	cfg, held := watches()
	xs := explorertest.NewWithConfig(t, cfg)
	nodeKey, userKey := explorertest.NewKey(t), explorertest.NewKey(t)
	node := explorertest.NodeID(nodeKey)
	nc := xs.RegisterNode(t, nodeKey)
	uc := xs.UserClient(userKey)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	id := xs.Reserve(t, userKey, explorertest.Volume(node, 1))

	r, err := uc.WaitReservation(ctx, id, "", 0)
	if err != nil || r.Delivered != nil || r.Result != nil {
		t.Fatalf("fresh reservation: %v %+v", err, r)
	}
	watch := func(after string) <-chan watchResult {
		done := make(chan watchResult, 1)
		go func() {
			r, err := uc.WaitReservation(ctx, id, after, 30*time.Second)
			done <- watchResult{r, err, time.Now()}
		}()
		awaitWatch(t, held, server.ReservationTopic(id))
		return done
	}
	get := func(done <-chan watchResult) watchResult {
		t.Helper()
		select {
		case got := <-done:
			if got.err != nil {
				t.Fatal(got.err)
			}
			return got
		case <-ctx.Done():
			t.Fatal("the watch never answered")
			return watchResult{}
		}
	}

	// Delivery: the node takes the event, then polls past it.
	done := watch(explorer.ChangeToken(r))
	evs, next, err := nc.Poll(ctx, 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("poll: %v, %d events", err, len(evs))
	}
	if got := xs.Reservation(t, id); got.Delivered != nil {
		t.Fatal("delivered before the node polled past the event")
	}
	polled := time.Now()
	pctx, pcancel := context.WithCancel(ctx)
	go nc.Poll(pctx, next) // held: nothing new for the node
	got := get(done)
	pcancel()
	if got.r.Delivered == nil || got.r.Result != nil {
		t.Fatalf("woke with delivered %v, result %+v; want a delivery", got.r.Delivered, got.r.Result)
	}
	t.Logf("from the node's poll to the watcher's answer: %s", got.at.Sub(polled))

	// Result.
	done = watch(explorer.ChangeToken(got.r))
	res := &provision.Result{Type: evs[0].Reservation.Type, ID: id, NodeID: node, Digest: evs[0].Reservation.Digest(), Created: time.Now().UTC(), State: provision.StateOk}
	if err := res.Sign(provision.KeySigner(nodeKey)); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if err := nc.Feedback(ctx, node, res); err != nil {
		t.Fatal(err)
	}
	got = get(done)
	if got.r.Result == nil || got.r.Result.Signature != res.Signature {
		t.Fatalf("woke with result %+v, want the stored one", got.r.Result)
	}
	t.Logf("from the result's submission to the watcher's answer: %s", got.at.Sub(sent))
	if n := xs.Explorer().Watching(); n != 0 {
		t.Fatalf("%d watches still held", n)
	}
}

// TestWatchAnswersAtOnceWhenChanged: an after token the reservation no
// longer has answers without waiting.
func TestWatchAnswersAtOnceWhenChanged(t *testing.T) {
	xs := explorertest.New(t)
	nodeKey, userKey := explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, nodeKey)
	id := xs.Reserve(t, userKey, explorertest.Volume(explorertest.NodeID(nodeKey), 1))
	start := time.Now()
	r, err := xs.UserClient(userKey).WaitReservation(t.Context(), id, "stale-token", 30*time.Second)
	if err != nil || r.ID != id {
		t.Fatalf("%v %+v", err, r)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a changed reservation was held %s", d)
	}
}

// TestWatchWaitPasses: an unchanged reservation is answered, unchanged,
// when the wait passes.
func TestWatchWaitPasses(t *testing.T) {
	xs := explorertest.New(t)
	nodeKey, userKey := explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, nodeKey)
	id := xs.Reserve(t, userKey, explorertest.Volume(explorertest.NodeID(nodeKey), 1))
	uc := xs.UserClient(userKey)
	r, err := uc.WaitReservation(t.Context(), id, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	tok := explorer.ChangeToken(r)
	start := time.Now()
	r, err = uc.WaitReservation(t.Context(), id, tok, 50*time.Millisecond)
	if err != nil || explorer.ChangeToken(r) != tok {
		t.Fatalf("%v, token %s want %s", err, explorer.ChangeToken(r), tok)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("answered after %s, before the wait passed", d)
	}
}

// TestWatchesPerKeyBounded: one key holds at most MaxWatches long-polls;
// the next is refused with 429, and another key is not affected, until
// all keys together hold MaxWatchesTotal.
func TestWatchesPerKeyBounded(t *testing.T) {
	cfg, held := watches()
	cfg.MaxWatches, cfg.MaxWatchesTotal = 2, 3
	xs := explorertest.NewWithConfig(t, cfg)
	nodeKey, userKey, other := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, nodeKey)
	id := xs.Reserve(t, userKey, explorertest.Volume(explorertest.NodeID(nodeKey), 1))
	opts := explorertest.ClientOptions()
	opts.MaxAttempts = 1
	uc := explorer.NewUserClient(xs.URL(), userKey, opts)
	r, err := uc.WaitReservation(t.Context(), id, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	tok := explorer.ChangeToken(r)
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := uc.WaitReservation(ctx, id, tok, time.Minute)
			errs <- err
		}()
		awaitWatch(t, held, server.ReservationTopic(id))
	}
	_, err = uc.WaitReservation(t.Context(), id, tok, time.Minute)
	var apiErr *explorer.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusTooManyRequests {
		t.Fatalf("third watch: %v, want 429", err)
	}
	// Another key still gets its own, up to the server's total of 3.
	oc := explorer.NewUserClient(xs.URL(), other, opts)
	if _, err := oc.WaitReservation(t.Context(), id, tok, 10*time.Millisecond); err != nil {
		t.Fatalf("another key's watch: %v", err)
	}
	awaitWatch(t, held, server.ReservationTopic(id)) // that one's
	go oc.WaitReservation(ctx, id, tok, time.Minute)
	awaitWatch(t, held, server.ReservationTopic(id))
	third := explorer.NewUserClient(xs.URL(), explorertest.NewKey(t), opts)
	if _, err = third.WaitReservation(t.Context(), id, tok, time.Minute); !errors.As(err, &apiErr) || apiErr.Status != http.StatusTooManyRequests {
		t.Fatalf("a fourth watch beyond the total of 3: %v, want 429", err)
	}
	cancel()
	for range 2 {
		<-errs
	}
}

// TestWatchListWakesOnNewReservation: the long-poll on a user's list
// answers when the user submits another reservation.
func TestWatchListWakesOnNewReservation(t *testing.T) {
	cfg, held := watches()
	xs := explorertest.NewWithConfig(t, cfg)
	nodeKey, userKey := explorertest.NewKey(t), explorertest.NewKey(t)
	node := explorertest.NodeID(nodeKey)
	xs.RegisterNode(t, nodeKey)
	xs.Reserve(t, userKey, explorertest.Volume(node, 1))
	uc := xs.UserClient(userKey)
	list, err := uc.WaitReservations(t.Context(), "", "", 0)
	if err != nil || len(list) != 1 {
		t.Fatalf("%v, %d", err, len(list))
	}
	done := make(chan []*provision.Reservation, 1)
	go func() {
		l, err := uc.WaitReservations(t.Context(), "", explorer.ListToken(list), 30*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- l
	}()
	awaitWatch(t, held, server.UserTopic(explorertest.UserID(userKey)))
	id := xs.Reserve(t, userKey, explorertest.Volume(node, 2))
	select {
	case l := <-done:
		if len(l) != 2 || (l[0].ID != id && l[1].ID != id) {
			t.Fatalf("woke with %d reservations, want the new %s among 2", len(l), id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the list watch never answered")
	}
}
