// Package storetest is the conformance suite of server.Store: every
// implementation (server.BoltStore, pgstore.Store) runs Run and must pass
// all of it.
package storetest

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// Open returns a fresh, empty store; the suite closes it.
type Open func(t *testing.T) server.Store

// Run runs the suite against the stores open makes, one per subtest.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(*testing.T, server.Store)
	}{
		{"register-node", testRegisterNode},
		{"update-node", testUpdateNode},
		{"create-reservation", testCreateReservation},
		{"events-pages", testEventsPages},
		{"reservations-of-user", testReservationsOf},
		{"mark-delete", testMarkDelete},
		{"put-results", testPutResults},
		{"state-snapshot", testState},
		{"inject-event", testInjectEvent},
		{"expire", testExpire},
		{"concurrent-appends-gapless", testConcurrentAppends},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("closing the store: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

// fixture is a registered node and a user.
type fixture struct {
	node    string
	nodeKey ed25519.PrivateKey
	user    ed25519.PrivateKey
	n       int // reservations made: each gets its own size, so its own digest
}

func newFixture(t *testing.T, s server.Store) *fixture {
	t.Helper()
	f := &fixture{nodeKey: explorertest.NewKey(t), user: explorertest.NewKey(t)}
	f.node = explorertest.NodeID(f.nodeKey)
	if _, err := s.RegisterNode(t.Context(), f.node, time.Now()); err != nil {
		t.Fatal(err)
	}
	return f
}

// reservation returns a fresh signed reservation of f's user for f's node.
func (f *fixture) reservation(mut func(*provision.Reservation)) *provision.Reservation {
	f.n++
	r := explorertest.Volume(f.node, int64(f.n))
	if mut != nil {
		mut(r)
	}
	r.Sign(f.user)
	return r
}

func (f *fixture) create(t *testing.T, s server.Store, mut func(*provision.Reservation)) (*provision.Reservation, uint64) {
	t.Helper()
	r := f.reservation(mut)
	seq, err := s.CreateReservation(t.Context(), r)
	if err != nil {
		t.Fatalf("creating a reservation: %v", err)
	}
	return r, seq
}

func (f *fixture) result(t *testing.T, r *provision.Reservation, at time.Time) *provision.Result {
	t.Helper()
	res := &provision.Result{Type: r.Type, ID: r.ID, NodeID: f.node, Digest: r.Digest(), Version: r.Version, Created: at.UTC(), State: provision.StateOk}
	if err := res.Sign(provision.KeySigner(f.nodeKey)); err != nil {
		t.Fatal(err)
	}
	return res
}

func testRegisterNode(t *testing.T, s server.Store) {
	ctx := t.Context()
	node := explorertest.NodeID(explorertest.NewKey(t))
	if _, _, err := s.Node(ctx, node); !errors.Is(err, server.ErrUnknownNode) {
		t.Fatalf("unknown node: %v, want ErrUnknownNode", err)
	}
	at := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	created, err := s.RegisterNode(ctx, node, at)
	if err != nil || !created {
		t.Fatalf("first registration: %v, created %v", err, created)
	}
	created, err = s.RegisterNode(ctx, node, time.Now())
	if err != nil || created {
		t.Fatalf("second registration: %v, created %v; want no change", err, created)
	}
	rec, seq, err := s.Node(ctx, node)
	if err != nil || rec.NodeID != node || !rec.Registered.Equal(at) || seq != 0 {
		t.Fatalf("node: %+v seq %d, %v; want registered at %s, seq 0", rec, seq, err, at)
	}
}

func testUpdateNode(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	stats := &provision.Stats{Used: provision.Units{CRU: 2, SRU: 5}, Updated: time.Now().UTC().Truncate(time.Microsecond)}
	if err := s.UpdateNode(ctx, f.node, func(r *server.NodeRecord) { r.Stats = stats }); err != nil {
		t.Fatal(err)
	}
	rec, _, err := s.Node(ctx, f.node)
	if err != nil || rec.Stats == nil || rec.Stats.Used != stats.Used || !rec.Stats.Updated.Equal(stats.Updated) {
		t.Fatalf("stats after update: %+v, %v", rec, err)
	}
	err = s.UpdateNode(ctx, "nope", func(*server.NodeRecord) { t.Error("fn called for an unknown node") })
	if !errors.Is(err, server.ErrUnknownNode) {
		t.Fatalf("updating an unknown node: %v", err)
	}
}

func testCreateReservation(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	r1, seq1 := f.create(t, s, nil)
	r2, seq2 := f.create(t, s, nil)
	if seq1 != 1 || seq2 != 2 || r1.ID == "" || r1.ID == r2.ID {
		t.Fatalf("seqs %d %d, ids %q %q; want 1, 2 and two distinct IDs", seq1, seq2, r1.ID, r2.ID)
	}
	got, err := s.Reservation(ctx, r1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest() != r1.Digest() || got.Verify() != nil || got.Result != nil || string(got.Data) != string(r1.Data) {
		t.Fatalf("stored reservation %+v does not verify or differs from %+v", got, r1)
	}
	// A second submission of a digest is refused and takes no number.
	dup := *r1
	dup.ID = ""
	if _, err := s.CreateReservation(ctx, &dup); !errors.Is(err, server.ErrDuplicate) {
		t.Fatalf("duplicate digest: %v, want ErrDuplicate", err)
	}
	other := explorertest.Volume(explorertest.NodeID(explorertest.NewKey(t)), 1)
	other.Sign(f.user)
	if _, err := s.CreateReservation(ctx, other); !errors.Is(err, server.ErrUnknownNode) {
		t.Fatalf("unknown node: %v, want ErrUnknownNode", err)
	}
	if _, seq3 := f.create(t, s, nil); seq3 != 3 {
		t.Fatalf("after two refusals the next seq is %d, want 3 (gapless)", seq3)
	}
	if _, err := s.Reservation(ctx, "nope"); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("unknown reservation: %v, want ErrNotFound", err)
	}
	if _, seq, err := s.Node(ctx, f.node); err != nil || seq != 3 {
		t.Fatalf("node seq %d, %v; want 3", seq, err)
	}
}

func testEventsPages(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	var rs []*provision.Reservation
	for range 5 {
		r, _ := f.create(t, s, nil)
		rs = append(rs, r)
	}
	tests := []struct {
		name        string
		from        uint64
		limit       int
		first, next uint64
		n           int
	}{
		{"first-page", 0, 3, 1, 3, 3},
		{"second-page", 3, 3, 4, 5, 2},
		{"mid-stream", 1, 10, 2, 5, 4},
		{"caught-up", 5, 3, 0, 5, 0},
		{"beyond", 9, 3, 0, 9, 0},
	}
	for _, tt := range tests {
		evs, next, err := s.Events(ctx, f.node, tt.from, tt.limit)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if len(evs) != tt.n || next != tt.next {
			t.Fatalf("%s: %d events next %d, want %d next %d", tt.name, len(evs), next, tt.n, tt.next)
		}
		for i, ev := range evs {
			want := rs[tt.first+uint64(i)-1]
			var got provision.Reservation
			if err := json.Unmarshal(ev.Reservation, &got); err != nil {
				t.Fatalf("%s: event %d: %v", tt.name, ev.Seq, err)
			}
			if ev.Seq != tt.first+uint64(i) || got.ID != want.ID || got.Verify() != nil {
				t.Fatalf("%s: event seq %d id %s (verify %v), want seq %d id %s", tt.name, ev.Seq, got.ID, got.Verify(), tt.first+uint64(i), want.ID)
			}
		}
	}
	if _, _, err := s.Events(ctx, "nope", 0, 10); !errors.Is(err, server.ErrUnknownNode) {
		t.Fatalf("events of an unknown node: %v", err)
	}
}

func testReservationsOf(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	base := time.Now().UTC().Truncate(time.Second)
	// Created out of order, two in the same second: by created, then ID.
	late, _ := f.create(t, s, func(r *provision.Reservation) { r.Created = base })
	early, _ := f.create(t, s, func(r *provision.Reservation) { r.Created = base.Add(-time.Minute) })
	same, _ := f.create(t, s, func(r *provision.Reservation) { r.Created = base })
	g := newFixture(t, s)
	g.create(t, s, nil) // another user's
	list, err := s.ReservationsOf(ctx, explorertest.UserID(f.user))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{early.ID, min(late.ID, same.ID), max(late.ID, same.ID)}
	if len(list) != len(want) {
		t.Fatalf("%d reservations, want %d", len(list), len(want))
	}
	for i, r := range list {
		if r.ID != want[i] {
			t.Fatalf("reservation %d is %s, want %s", i, r.ID, want[i])
		}
	}
	if list, err := s.ReservationsOf(ctx, explorertest.UserID(explorertest.NewKey(t))); err != nil || len(list) != 0 {
		t.Fatalf("a user without reservations: %d, %v", len(list), err)
	}
}

func deleteCheck(sig string) func(*provision.Reservation) error {
	return func(r *provision.Reservation) error {
		r.ToDelete, r.DeleteSignature = true, sig
		return r.VerifyDelete()
	}
}

func testMarkDelete(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	r, _ := f.create(t, s, nil)
	refused := errors.New("refused")
	if _, _, err := s.MarkDelete(ctx, r.ID, func(r *provision.Reservation) error {
		r.ToDelete = true
		return refused
	}); !errors.Is(err, refused) {
		t.Fatalf("refused delete: %v", err)
	}
	if got, _ := s.Reservation(ctx, r.ID); got.ToDelete {
		t.Fatal("a refused delete was stored")
	}
	sig := hex.EncodeToString(ed25519.Sign(f.user, provision.DeleteChallenge(r.ID, r.Digest())))
	got, seq, err := s.MarkDelete(ctx, r.ID, deleteCheck(sig))
	if err != nil || seq != 2 || !got.ToDelete {
		t.Fatalf("delete: seq %d, %v; want seq 2", seq, err)
	}
	if _, seq, err := s.MarkDelete(ctx, r.ID, deleteCheck(sig)); err != nil || seq != 0 {
		t.Fatalf("repeated delete: seq %d, %v; want nothing published", seq, err)
	}
	evs, _, err := s.Events(ctx, f.node, 1, 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("events after the delete: %d, %v; want exactly one", len(evs), err)
	}
	var del provision.Reservation
	if err := json.Unmarshal(evs[0].Reservation, &del); err != nil || !del.ToDelete || del.VerifyDelete() != nil || del.Result != nil {
		t.Fatalf("published delete %+v, %v", del, err)
	}
	if _, _, err := s.MarkDelete(ctx, "nope", deleteCheck(sig)); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("delete of an unknown reservation: %v", err)
	}
}

func testPutResults(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a, _ := f.create(t, s, nil)
	b, _ := f.create(t, s, nil)
	now := time.Now()
	refused := errors.New("refused")
	pass := func(int, *provision.Reservation) error { return nil }
	first, newer, older := f.result(t, a, now), f.result(t, a, now.Add(time.Minute)), f.result(t, a, now.Add(-time.Minute))
	unknown := *f.result(t, b, now)
	unknown.ID = "nope"
	tests := []struct {
		name   string
		rs     []*provision.Result
		check  func(int, *provision.Reservation) error
		stored []bool
		errs   []error
		holds  map[string]*provision.Result // reservation ID → the result it holds afterwards
	}{
		{"first", []*provision.Result{first}, pass, []bool{true}, []error{nil}, map[string]*provision.Result{a.ID: first}},
		{"repeat", []*provision.Result{first}, pass, []bool{false}, []error{nil}, map[string]*provision.Result{a.ID: first}},
		{"older-kept-out", []*provision.Result{older}, pass, []bool{false}, []error{nil}, map[string]*provision.Result{a.ID: first}},
		{"refused-by-check", []*provision.Result{f.result(t, b, now)}, func(int, *provision.Reservation) error { return refused }, []bool{false}, []error{refused}, map[string]*provision.Result{b.ID: nil}},
		{"mixed-batch", []*provision.Result{newer, nil, &unknown, f.result(t, b, now), newer}, pass,
			[]bool{true, false, false, true, false}, []error{nil, nil, server.ErrNotFound, nil, nil},
			map[string]*provision.Result{a.ID: newer, b.ID: f.result(t, b, now)}},
	}
	for _, tt := range tests {
		stored, errs, err := s.PutResults(ctx, tt.rs, tt.check)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		for i := range tt.rs {
			if stored[i] != tt.stored[i] || (tt.errs[i] == nil) != (errs[i] == nil) || (tt.errs[i] != nil && !errors.Is(errs[i], tt.errs[i])) {
				t.Fatalf("%s: result %d stored %v err %v; want %v %v", tt.name, i, stored[i], errs[i], tt.stored[i], tt.errs[i])
			}
		}
		for id, want := range tt.holds {
			r, err := s.Reservation(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if (want == nil) != (r.Result == nil) || (want != nil && r.Result.Signature != want.Signature) {
				t.Fatalf("%s: %s holds %+v, want %+v", tt.name, id, r.Result, want)
			}
			if r.Result != nil && r.Result.Verify(f.nodeKey.Public().(ed25519.PublicKey)) != nil {
				t.Fatalf("%s: the stored result does not verify", tt.name)
			}
		}
	}
}

func testState(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	kept, _ := f.create(t, s, nil)
	deleted, _ := f.create(t, s, nil)
	expired, _ := f.create(t, s, func(r *provision.Reservation) { r.Duration = time.Minute })
	versioned, _ := f.create(t, s, func(r *provision.Reservation) { r.Version = 3 })
	sig := hex.EncodeToString(ed25519.Sign(f.user, provision.DeleteChallenge(deleted.ID, deleted.Digest())))
	if _, _, err := s.MarkDelete(ctx, deleted.ID, deleteCheck(sig)); err != nil {
		t.Fatal(err)
	}
	g := newFixture(t, s)
	g.create(t, s, nil) // another node's
	st, err := s.State(ctx, f.node, expired.Expires().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*provision.Reservation{kept.ID: kept, versioned.ID: versioned}
	if st.NodeID != f.node || st.Seq != 5 || len(st.Reservations) != len(want) {
		t.Fatalf("state %+v; want seq 5 and %d reservations", st, len(want))
	}
	for i, e := range st.Reservations {
		r := want[e.ID]
		if r == nil || e.Digest != r.Digest() || e.Version != r.Version || (i > 0 && st.Reservations[i-1].ID >= e.ID) {
			t.Fatalf("entry %d %+v: not an active reservation of the node, or out of ID order", i, e)
		}
	}
	if _, err := s.State(ctx, "nope", time.Now()); !errors.Is(err, server.ErrUnknownNode) {
		t.Fatalf("state of an unknown node: %v", err)
	}
}

func testInjectEvent(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	f.create(t, s, nil)
	raw := []byte(`{"id":"x","data":"not what a node expects"}`)
	seq, err := s.InjectEvent(ctx, f.node, raw)
	if err != nil || seq != 2 {
		t.Fatalf("inject: seq %d, %v", seq, err)
	}
	evs, _, err := s.Events(ctx, f.node, 1, 10)
	if err != nil || len(evs) != 1 || string(evs[0].Reservation) != string(raw) {
		t.Fatalf("injected event: %+v, %v", evs, err)
	}
	if _, err := s.InjectEvent(ctx, "nope", raw); !errors.Is(err, server.ErrUnknownNode) {
		t.Fatalf("inject for an unknown node: %v", err)
	}
}

// testConcurrentAppends has writers race on one node's stream, with
// refused (rolled back) writes among them, while a reader follows the
// stream: the reader must see every accepted reservation exactly once, at
// consecutive numbers, never skipping one that commits later.
func testConcurrentAppends(t *testing.T, s server.Store) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	f := newFixture(t, s)
	const writers, each = 8, 25
	rs := make([][]*provision.Reservation, writers)
	for w := range rs {
		for range each {
			rs[w] = append(rs[w], f.reservation(nil))
		}
	}
	accepted := make(chan string, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i, r := range rs[w] {
				if _, err := s.CreateReservation(ctx, r); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				accepted <- r.ID
				if i%5 == 0 { // a refused duplicate: rolled back, no number
					dup := *r
					dup.ID = ""
					if _, err := s.CreateReservation(ctx, &dup); !errors.Is(err, server.ErrDuplicate) {
						t.Errorf("writer %d: duplicate: %v", w, err)
					}
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[string]uint64{}
	var cursor uint64
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		evs, next, err := s.Events(ctx, f.node, cursor, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Seq != cursor+1 {
				t.Fatalf("event %d after cursor %d: a hole", ev.Seq, cursor)
			}
			var r provision.Reservation
			if err := json.Unmarshal(ev.Reservation, &r); err != nil {
				t.Fatal(err)
			}
			if at, dup := seen[r.ID]; dup {
				t.Fatalf("reservation %s at seq %d and %d", r.ID, at, ev.Seq)
			}
			seen[r.ID] = ev.Seq
			cursor = ev.Seq
		}
		if next != cursor {
			t.Fatalf("next %d, cursor %d", next, cursor)
		}
		if finished && len(evs) == 0 {
			break
		}
	}
	close(accepted)
	n := 0
	for id := range accepted {
		n++
		if _, ok := seen[id]; !ok {
			t.Errorf("accepted reservation %s never appeared in the stream", id)
		}
	}
	if n != writers*each || len(seen) != n {
		t.Fatalf("%d accepted, %d seen; want %d", n, len(seen), writers*each)
	}
}

// testExpire deletes what expired before the cutoff, with its result and
// indexes, and keeps the rest: what expired after the cutoff (readable,
// listed, but out of the state snapshot) and what is still active.
func testExpire(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	now := time.Now().UTC().Truncate(time.Second)
	gone, _ := f.create(t, s, func(r *provision.Reservation) { r.Created, r.Duration = now.Add(-3*time.Hour), time.Hour })
	retained, _ := f.create(t, s, func(r *provision.Reservation) { r.Created, r.Duration = now.Add(-3*time.Hour), 150*time.Minute })
	active, _ := f.create(t, s, nil)
	if _, errs, err := s.PutResults(ctx, []*provision.Result{f.result(t, gone, now.Add(-150*time.Minute))}, func(int, *provision.Reservation) error { return nil }); err != nil || errs[0] != nil {
		t.Fatalf("storing a result: %v %v", err, errs)
	}
	n, err := s.Expire(ctx, now.Add(-time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("expire: %d, %v; want 1 deleted", n, err)
	}
	if _, err := s.Reservation(ctx, gone.ID); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("the reservation expired before the cutoff is still there: %v", err)
	}
	for _, r := range []*provision.Reservation{retained, active} {
		if _, err := s.Reservation(ctx, r.ID); err != nil {
			t.Fatalf("reservation %s: %v", r.ID, err)
		}
	}
	list, err := s.ReservationsOf(ctx, explorertest.UserID(f.user))
	if err != nil || len(list) != 2 || list[0].ID != retained.ID || list[1].ID != active.ID {
		t.Fatalf("the user's reservations after expiry: %d, %v; want the retained one and the active one", len(list), err)
	}
	st, err := s.State(ctx, f.node, now)
	if err != nil || len(st.Reservations) != 1 || st.Reservations[0].ID != active.ID || st.Seq != 3 {
		t.Fatalf("state after expiry %+v, %v; want only the active reservation, as of seq 3", st, err)
	}
	if n, err := s.Expire(ctx, now.Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("expiring again: %d, %v; want nothing", n, err)
	}
	// The digest index forgot it too: the same signed reservation is
	// accepted again (the server refuses it before: it has expired).
	again := *gone
	again.ID, again.Result = "", nil
	if _, err := s.CreateReservation(ctx, &again); err != nil {
		t.Fatalf("the deleted reservation's digest is still held: %v", err)
	}
}
