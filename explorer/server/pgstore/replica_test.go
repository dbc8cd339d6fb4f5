package pgstore_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/pgstore"
	"github.com/edgeprov/provisiond/internal/pgtest"
	"github.com/edgeprov/provisiond/internal/source"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// replica is one explorer process's worth of server on a shared database.
type replica struct {
	srv  *server.Server
	hs   *httptest.Server
	held chan string // nodes whose poll started waiting
}

func startReplica(t *testing.T, dsn string) *replica {
	t.Helper()
	st, err := pgstore.Open(t.Context(), pgstore.Config{URL: dsn})
	if err != nil {
		t.Fatal(err)
	}
	rp := &replica{held: make(chan string, 64)}
	srv, err := server.New(server.Config{Store: st, OnHold: func(node string) {
		select {
		case rp.held <- node:
		default:
		}
	}})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	rp.srv, rp.hs = srv, httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Release()
		rp.hs.CloseClientConnections()
		rp.hs.Close()
		if err := srv.Close(); err != nil {
			t.Errorf("closing a replica: %v", err)
		}
	})
	return rp
}

func (rp *replica) node(key ed25519.PrivateKey) *explorer.Client {
	return explorer.NewClient(rp.hs.URL, key, explorertest.ClientOptions())
}

func (rp *replica) user(key ed25519.PrivateKey) *explorer.Client {
	return explorer.NewUserClient(rp.hs.URL, key, explorertest.ClientOptions())
}

func (rp *replica) awaitHold(t *testing.T) {
	t.Helper()
	select {
	case <-rp.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the poll was never held")
	}
}

type polled struct {
	evs  []provision.Event
	next uint64
	err  error
	at   time.Time
}

func pollAsync(ctx context.Context, c *explorer.Client, from uint64) <-chan polled {
	ch := make(chan polled, 1)
	go func() {
		evs, next, err := c.Poll(ctx, from)
		ch <- polled{evs, next, err, time.Now()}
	}()
	return ch
}

// wakeup is two replicas on one new database with a node registered
// through the first, for the tests of how a held poll wakes.
type wakeup struct {
	dsn        string
	a, b       *replica
	node, user ed25519.PrivateKey
	nc         *explorer.Client
	cursor     uint64
}

func newWakeup(t *testing.T) *wakeup {
	t.Helper()
	w := &wakeup{dsn: pgtest.Shared(t).NewDB(t)}
	w.a, w.b = startReplica(t, w.dsn), startReplica(t, w.dsn)
	w.node, w.user = explorertest.NewKey(t), explorertest.NewKey(t)
	w.nc = w.a.node(w.node)
	if err := w.nc.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	return w
}

// round holds a poll of the node from the cursor on the first replica,
// calls meanwhile once it is held, then commits the node's reservation
// number i+1 through the second replica. It returns the poll's answer,
// the reservation's ID and when it was committed, and moves the cursor
// to the poll's next.
func (w *wakeup) round(t *testing.T, i int, meanwhile func()) (polled, string, time.Time) {
	t.Helper()
	got := pollAsync(t.Context(), w.nc, w.cursor)
	w.a.awaitHold(t)
	meanwhile()
	r := explorertest.Volume(explorertest.NodeID(w.node), int64(i+1))
	r.Sign(w.user)
	id, err := w.b.user(w.user).CreateReservation(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	p := <-got
	w.cursor = p.next
	return p, id, committed
}

// TestReplicasWakeEachOther holds a node's poll on one replica and writes
// through another: the NOTIFY of the writer wakes the poll long before its
// wait (5 s) passes.
func TestReplicasWakeEachOther(t *testing.T) {
	w := newWakeup(t)
	for i := range 3 {
		cursor := w.cursor
		p, id, committed := w.round(t, i, func() {})
		if p.err != nil || len(p.evs) != 1 || p.evs[0].Reservation.ID != id || p.next != cursor+1 {
			t.Fatalf("round %d: %d events next %d, %v; want reservation %s at %d", i, len(p.evs), p.next, p.err, id, cursor+1)
		}
		t.Logf("round %d: woken %s after the commit on the other replica", i, p.at.Sub(committed))
	}
}

func terminateListeners(t *testing.T, dsn string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(t.Context(), `select count(pg_terminate_backend(pid)) from pg_stat_activity
		where application_name = 'explorerd-listener' and datname = current_database()`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestListenerBackendTerminated kills the listeners' backends while a
// poll is held and commits through another replica at once, while they
// reconnect, and a while later: the held poll wakes within a second of the
// commit every time (the listener catches up on reconnecting, and polls
// the database every second while it cannot).
func TestListenerBackendTerminated(t *testing.T) {
	w := newWakeup(t)
	for i, delay := range []time.Duration{0, 0, 50 * time.Millisecond, 300 * time.Millisecond, 0} {
		p, id, committed := w.round(t, i, func() {
			if n := terminateListeners(t, w.dsn); n == 0 {
				t.Fatalf("round %d: no listener backend to terminate", i)
			}
			time.Sleep(delay)
		})
		if p.err != nil || len(p.evs) != 1 || p.evs[0].Reservation.ID != id {
			t.Fatalf("round %d: %d events, %v; want reservation %s", i, len(p.evs), p.err, id)
		}
		late := p.at.Sub(committed)
		t.Logf("round %d (commit %s after the termination): woken %s after the commit", i, delay, late)
		if late > time.Second+250*time.Millisecond { // 250 ms for the client and the race detector on a busy machine
			t.Fatalf("round %d: the waiter woke %s after the commit, want within 1 s", i, late)
		}
	}
}

// TestPrunedCursorGone prunes a node's events: a poll from below the
// low-water mark gets 410 Gone, the state snapshot gives the active
// reservations and the seq to poll from, and a poll from there works.
// Prune runs on one replica at a time: with the lock held elsewhere it
// does nothing.
func TestPrunedCursorGone(t *testing.T) {
	dsn := pgtest.Shared(t).NewDB(t)
	a := startReplica(t, dsn)
	st, err := pgstore.Open(t.Context(), pgstore.Config{URL: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	nc := a.node(node)
	if err := nc.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 4 {
		r := explorertest.Volume(nodeID, int64(i+1))
		r.Sign(user)
		id, err := a.user(user).CreateReservation(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := a.user(user).DeleteReservation(t.Context(), ids[1]); err != nil {
		t.Fatal(err)
	}

	// Another replica holds the prune lock: nothing is pruned.
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), "select pg_advisory_lock($1)", int64(0x70727600_00000002)); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Prune(t.Context(), time.Now().Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("prune while another replica holds the lock: %d, %v; want 0", n, err)
	}
	if _, err := conn.Exec(t.Context(), "select pg_advisory_unlock($1)", int64(0x70727600_00000002)); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Prune(t.Context(), time.Now().Add(time.Hour)); err != nil || n != 5 {
		t.Fatalf("prune: %d, %v; want the 5 events", n, err)
	}

	_, _, err = nc.Poll(t.Context(), 2)
	var apiErr *explorer.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusGone || !errors.Is(err, explorer.ErrCursorGone) {
		t.Fatalf("poll from a pruned cursor: %v, want 410 Gone (ErrCursorGone)", err)
	}
	if _, _, err := nc.Poll(t.Context(), 5); err != nil && errors.Is(err, explorer.ErrCursorGone) {
		t.Fatalf("poll from the low-water mark itself: %v", err)
	}
	state, err := nc.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if state.Seq != 5 || state.Low != 5 || len(state.Reservations) != 3 {
		t.Fatalf("state %+v; want seq 5, low 5 and the 3 reservations not deleted", state)
	}
	for _, e := range state.Reservations {
		if e.ID == ids[1] {
			t.Fatalf("the deleted reservation %s is in the state", e.ID)
		}
	}
	r := explorertest.Volume(nodeID, 9)
	r.Sign(user)
	id, err := a.user(user).CreateReservation(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	evs, next, err := nc.Poll(t.Context(), state.Seq)
	if err != nil || len(evs) != 1 || evs[0].Reservation.ID != id || next != 6 {
		t.Fatalf("poll from the snapshot's seq: %d events next %d, %v", len(evs), next, err)
	}
}

// TestPostgresRestartUnderLoad stops PostgreSQL as a crash would while
// users write through two replicas and a node follows its stream through
// one of them, then starts it again: every reservation a user was told was
// accepted reaches the node exactly once, at consecutive numbers.
func TestPostgresRestartUnderLoad(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.NewDB(t)
	a, b := startReplica(t, dsn), startReplica(t, dsn)
	node := explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	nc := a.node(node)
	if err := nc.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	var mu sync.Mutex
	accepted := map[string]bool{}
	refused := 0
	load, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			user := explorertest.NewKey(t)
			via := []*replica{a, b}[w%2]
			for i := 0; load.Err() == nil; i++ {
				r := explorertest.Volume(nodeID, int64(i+1))
				r.Sign(user)
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				id, err := via.user(user).CreateReservation(cctx, r)
				cancel()
				mu.Lock()
				if err == nil {
					accepted[id] = true
				} else {
					refused++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}

	var fl explorertest.Follower
	// follow polls once (a caught-up poll is held for the client's wait,
	// 5 s) and returns how many events came, or -1 on an error.
	follow := func() int {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		evs, next, err := nc.Poll(pctx, fl.Cursor)
		if err != nil {
			return -1
		}
		return fl.Take(t, evs, next)
	}
	fl.Follow(time.Second, follow)
	before := len(fl.Seen)
	if err := c.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	fl.Follow(time.Second, follow)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	fl.Follow(2*time.Second, follow)
	stopLoad()
	wg.Wait()
	// Every write has returned: drain until a poll finds nothing.
	fl.Drain(follow)
	mu.Lock()
	defer mu.Unlock()
	fl.CheckDelivered(t, accepted)
	t.Logf("%d accepted (%d delivered before the crash), %d refused during the outage, %d delivered", len(accepted), before, refused, len(fl.Seen))
	if before == 0 || len(fl.Seen) <= before || refused == 0 {
		t.Fatalf("the load did not span the restart: %d delivered before, %d after, %d refused", before, len(fl.Seen), refused)
	}
}

// TestNodeReconcilesFromSnapshot runs a node's poll source against a
// replica whose events were pruned past the node's cursor: the poll gets
// 410, the source reconciles from the state snapshot (the reservations the
// node lacks, fetched and verified like events; the owner-signed delete of
// one it holds) and then follows the stream from the snapshot's seq.
func TestNodeReconcilesFromSnapshot(t *testing.T) {
	dsn := pgtest.Shared(t).NewDB(t)
	a := startReplica(t, dsn)
	st, err := pgstore.Open(t.Context(), pgstore.Config{URL: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	nc := a.node(node)
	if err := nc.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	var rs []*provision.Reservation
	for i := range 4 {
		r := explorertest.Volume(nodeID, int64(i+1))
		r.Sign(user)
		if _, err := a.user(user).CreateReservation(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	// The node persisted the first event, then was away while the second
	// was deleted and the events were pruned.
	if _, err := a.user(user).DeleteReservation(t.Context(), rs[0].ID); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Prune(t.Context(), time.Now().Add(time.Hour)); err != nil || n != 5 {
		t.Fatalf("prune: %d, %v", n, err)
	}
	store := provisiontest.NewStore()
	if err := store.SetCursor("explorer", 1); err != nil {
		t.Fatal(err)
	}
	held := []provision.SnapshotEntry{{ID: rs[0].ID, Digest: rs[0].Digest(), Version: rs[0].Version}}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	jobs := source.NewPoll(nc, store, "explorer", source.PollOptions{
		Held: func() ([]provision.SnapshotEntry, error) { return held, nil },
	}).Reservations(ctx)
	got := map[string]bool{} // ID → a delete
	for len(got) < 4 {
		select {
		case j := <-jobs:
			if j.Last {
				continue
			}
			if err := provision.Validate(j.Reservation, nodeID, time.Now()); err != nil {
				t.Fatalf("job %s would be refused by the node: %v", j.Reservation.ID, err)
			}
			got[j.Reservation.ID] = j.Reservation.ToDelete
			j.Ack(nil)
		case <-ctx.Done():
			t.Fatalf("got %v, want the 3 active reservations and the delete of %s", got, rs[0].ID)
		}
	}
	for i, r := range rs {
		if del, ok := got[r.ID]; !ok || del != (i == 0) {
			t.Fatalf("reservation %d: job %v (delete %v)", i, ok, del)
		}
	}
	// Then it follows the stream from the snapshot's seq.
	more := explorertest.Volume(nodeID, 9)
	more.Sign(user)
	if _, err := a.user(user).CreateReservation(t.Context(), more); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case j := <-jobs:
			if j.Last {
				continue
			}
			if j.Reservation.ID != more.ID {
				t.Fatalf("after reconciling: job %s, want %s", j.Reservation.ID, more.ID)
			}
			j.Ack(nil)
			return
		case <-ctx.Done():
			t.Fatal("the new reservation never came after reconciling")
		}
	}
}
