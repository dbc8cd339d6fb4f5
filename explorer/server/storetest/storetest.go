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
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
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
		{"reservations-pages", testReservationsPage},
		{"reservations-page-bytes", testReservationsPageBytes},
		{"quota", testQuota},
		{"quota-concurrent", testQuotaConcurrent},
		{"unit-quota", testUnitQuota},
		{"unit-quota-concurrent", testUnitQuotaConcurrent},
		{"unit-quota-update", testUnitQuotaUpdate},
		{"mark-delete", testMarkDelete},
		{"update-reservation", testUpdateReservation},
		{"put-results", testPutResults},
		{"state-snapshot", testState},
		{"inject-event", testInjectEvent},
		{"mark-delivered", testMarkDelivered},
		{"node-reservations", testNodeReservations},
		{"expire", testExpire},
		{"concurrent-appends-gapless", testConcurrentAppends},
		{"nodes-filter-and-pages", testNodes},
		{"touch-nodes", testTouchNodes},
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

func testNodes(t *testing.T, s server.Store) {
	ctx := t.Context()
	u := func(cru uint64, mru, sru, hru float64) provision.Units {
		return provision.Units{CRU: cru, MRU: mru, SRU: sru, HRU: hru}
	}
	at := time.Now().UTC().Truncate(time.Microsecond)
	nodes := []struct {
		name string
		set  func(*server.NodeRecord)
		free provision.Units
	}{
		{"stats", func(r *server.NodeRecord) {
			r.Capacity = &provision.Capacity{Total: u(1, 1, 1, 1)} // older: the stats win
			r.Stats = &provision.Stats{Used: u(2, 8, 100, 0), Updated: at,
				Capacity: provision.Capacity{Total: u(8, 32, 500, 0), Reserved: u(0, 4, 0, 0)}}
			r.Version = "v1.2.3"
		}, u(6, 20, 400, 0)},
		{"capacity-only", func(r *server.NodeRecord) {
			r.Capacity = &provision.Capacity{Total: u(4, 16, 100, 1000), Reserved: u(1, 2, 0, 0)}
		}, u(3, 14, 100, 1000)},
		{"nothing-reported", func(*server.NodeRecord) {}, u(0, 0, 0, 0)},
		{"overcommitted", func(r *server.NodeRecord) {
			r.Stats = &provision.Stats{Used: u(4, 8, 0, 0), Updated: at,
				Capacity: provision.Capacity{Total: u(2, 4, 10, 0), Reserved: u(0, 1, 0, 0)}}
		}, u(0, 0, 10, 0)},
	}
	byName := map[string]string{}
	free := map[string]provision.Units{}
	var ids []string
	for _, n := range nodes {
		f := newFixture(t, s)
		if err := s.UpdateNode(ctx, f.node, n.set); err != nil {
			t.Fatal(err)
		}
		byName[n.name], free[f.node] = f.node, n.free
		ids = append(ids, f.node)
	}
	sort.Strings(ids)
	all, err := s.Nodes(ctx, server.NodeQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if got := recordIDs(all); !equalStrings(got, ids) {
		t.Fatalf("all nodes: %v, want %v (byte order)", got, ids)
	}
	for _, rec := range all {
		if got := rec.Units().Free; got != free[rec.NodeID] {
			t.Fatalf("free units of %s: %+v, want %+v", rec.NodeID, got, free[rec.NodeID])
		}
	}
	if rec, _, err := s.Node(ctx, byName["stats"]); err != nil || rec.Version != "v1.2.3" {
		t.Fatalf("version: %+v, %v", rec, err)
	}
	filters := []struct {
		name string
		min  provision.Units
		want []string
	}{
		{"cru-4", u(4, 0, 0, 0), []string{"stats"}},
		{"mru-14", u(0, 14, 0, 0), []string{"stats", "capacity-only"}},
		{"mru-just-above", u(0, 14.0001, 0, 0), []string{"stats"}},
		{"hru-1", u(0, 0, 0, 1), []string{"capacity-only"}},
		{"sru-10", u(0, 0, 10, 0), []string{"stats", "capacity-only", "overcommitted"}},
		{"cru-and-sru", u(1, 0, 200, 0), []string{"stats"}},
		{"nothing-fits", u(100, 0, 0, 0), nil},
	}
	for _, tt := range filters {
		var want []string
		for _, n := range tt.want {
			want = append(want, byName[n])
		}
		sort.Strings(want)
		got, err := s.Nodes(ctx, server.NodeQuery{MinFree: tt.min, Limit: 10})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !equalStrings(recordIDs(got), want) {
			t.Fatalf("%s: %v, want %v", tt.name, recordIDs(got), want)
		}
		// The same, one node per page.
		var paged []string
		after := ""
		for range 10 {
			page, err := s.Nodes(ctx, server.NodeQuery{MinFree: tt.min, After: after, Limit: 1})
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, page[0].NodeID)
			after = page[0].NodeID
		}
		if !equalStrings(paged, want) {
			t.Fatalf("%s, one per page: %v, want %v", tt.name, paged, want)
		}
	}
	if _, err := s.Nodes(ctx, server.NodeQuery{}); !errors.Is(err, server.ErrBadRequest) {
		t.Fatalf("limit 0: %v, want ErrBadRequest", err)
	}
}

func testTouchNodes(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	other := newFixture(t, s)
	rec, _, err := s.Node(ctx, f.node)
	if err != nil {
		t.Fatal(err)
	}
	t0 := rec.LastSeen
	later := t0.Add(time.Hour).Truncate(time.Microsecond)
	unknown := explorertest.NodeID(explorertest.NewKey(t))
	if err := s.TouchNodes(ctx, map[string]time.Time{f.node: later, unknown: later}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Node(ctx, unknown); !errors.Is(err, server.ErrUnknownNode) {
		t.Fatalf("touching an unknown node registered it: %v", err)
	}
	// An earlier time never lowers it; an update keeps it.
	if err := s.TouchNodes(ctx, map[string]time.Time{f.node: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateNode(ctx, f.node, func(r *server.NodeRecord) { r.Version = "v9" }); err != nil {
		t.Fatal(err)
	}
	rec, _, err = s.Node(ctx, f.node)
	if err != nil || !rec.LastSeen.Equal(later) || rec.Version != "v9" {
		t.Fatalf("after touches: %+v, %v; want last seen %s", rec, err, later)
	}
	got, err := s.Nodes(ctx, server.NodeQuery{SeenSince: later.Add(-time.Minute), Limit: 10})
	if err != nil || !equalStrings(recordIDs(got), []string{f.node}) || !got[0].LastSeen.Equal(later) {
		t.Fatalf("seen since: %v, %v; want only %s (not %s)", recordIDs(got), err, f.node, other.node)
	}
	if got, err := s.Nodes(ctx, server.NodeQuery{SeenSince: later.Add(time.Second), Limit: 10}); err != nil || len(got) != 0 {
		t.Fatalf("seen since after every node: %v, %v", recordIDs(got), err)
	}
}

func recordIDs(recs []*server.NodeRecord) []string {
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.NodeID)
	}
	return ids
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testMarkDelivered(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	other := newFixture(t, s)
	a, seqA := f.create(t, s, func(r *provision.Reservation) {
		at := time.Now()
		r.Delivered = &at // a user cannot set it: it is the explorer's
	})
	b, seqB := f.create(t, s, nil)
	o, _ := other.create(t, s, nil)
	if seqB != seqA+1 {
		t.Fatalf("seqs %d, %d: want consecutive", seqA, seqB)
	}
	delivered := func(id string) *time.Time {
		t.Helper()
		r, err := s.Reservation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return r.Delivered
	}
	if d := delivered(a.ID); d != nil {
		t.Fatalf("a new reservation is delivered at %v", d)
	}
	evs, _, err := s.Events(ctx, f.node, 0, 10)
	if err != nil || len(evs) != 2 {
		t.Fatalf("events: %d, %v", len(evs), err)
	}
	if bytes := string(evs[0].Reservation); strings.Contains(bytes, "delivered_at") {
		t.Fatalf("the event sent to the node carries delivered_at: %s", bytes)
	}
	ids := func(ds []server.Delivery) map[string]string {
		m := map[string]string{}
		for _, d := range ds {
			m[d.ID] = d.UserID
		}
		return m
	}
	user := hex.EncodeToString(f.user.Public().(ed25519.PublicKey))
	t1 := time.Now().Add(time.Second).Truncate(time.Microsecond)
	t2 := t1.Add(time.Minute)
	tests := []struct {
		name string
		node string
		upTo uint64
		at   time.Time
		want map[string]string
	}{
		{"before-any", f.node, seqA - 1, t1, map[string]string{}},
		{"first", f.node, seqA, t1, map[string]string{a.ID: user}},
		{"repeat-marks-nothing", f.node, seqA, t2, map[string]string{}},
		{"second", f.node, seqB + 5, t2, map[string]string{b.ID: user}},
		{"unknown-node", explorertest.NodeID(explorertest.NewKey(t)), 100, t2, map[string]string{}},
	}
	for _, tt := range tests {
		ds, err := s.MarkDelivered(ctx, tt.node, tt.upTo, tt.at)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := ids(ds); len(got) != len(tt.want) || len(ds) != len(tt.want) {
			t.Fatalf("%s: marked %v, want %v", tt.name, got, tt.want)
		} else {
			for id, u := range tt.want {
				if got[id] != u {
					t.Fatalf("%s: marked %v, want %v", tt.name, got, tt.want)
				}
			}
		}
	}
	if d := delivered(a.ID); d == nil || !d.Equal(t1) {
		t.Fatalf("a delivered at %v, want %v", d, t1)
	}
	if d := delivered(b.ID); d == nil || !d.Equal(t2) {
		t.Fatalf("b delivered at %v, want %v", d, t2)
	}
	if d := delivered(o.ID); d != nil {
		t.Fatalf("another node's reservation delivered at %v", d)
	}
	list, err := s.ReservationsOf(ctx, user)
	if err != nil || len(list) != 2 || list[0].Delivered == nil || list[1].Delivered == nil {
		t.Fatalf("the list does not show the deliveries: %v %+v", err, list)
	}
	// A signed delete keeps the delivery time and does not publish it.
	r, _, err := s.MarkDelete(ctx, a.ID, func(r *provision.Reservation) error {
		r.ToDelete, r.DeleteSignature = true, "sig"
		return nil
	})
	if err != nil || r.Delivered == nil || !r.Delivered.Equal(t1) {
		t.Fatalf("mark delete: %v, delivered %v", err, r.Delivered)
	}
	evs, _, err = s.Events(ctx, f.node, seqB, 10)
	if err != nil || len(evs) != 1 || strings.Contains(string(evs[0].Reservation), "delivered_at") {
		t.Fatalf("the delete event: %v %v", err, evs)
	}
	if d := delivered(a.ID); d == nil || !d.Equal(t1) {
		t.Fatalf("a delivered at %v after the delete, want %v", d, t1)
	}
}

func testNodeReservations(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	other := newFixture(t, s)
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var made []*provision.Reservation
	for i := range 4 {
		r, _ := f.create(t, s, func(r *provision.Reservation) { r.Created = base.Add(time.Duration(i) * time.Minute) })
		made = append(made, r)
	}
	other.create(t, s, nil)
	// A delete publishes the oldest again: it is listed once, in its place.
	if _, _, err := s.MarkDelete(ctx, made[0].ID, deleteCheck(hex.EncodeToString(ed25519.Sign(f.user, provision.DeleteChallenge(made[0].ID, made[0].Digest()))))); err != nil {
		t.Fatal(err)
	}
	res := f.result(t, made[1], time.Now())
	if _, _, err := s.PutResults(ctx, []*provision.Result{res}, func(int, *provision.Reservation) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkDelivered(ctx, f.node, 100, time.Now()); err != nil {
		t.Fatal(err)
	}
	list, err := s.NodeReservations(ctx, f.node, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 4 {
		t.Fatalf("%d reservations, want 4", len(list))
	}
	for i, r := range list {
		if want := made[3-i].ID; r.ID != want {
			t.Fatalf("reservation %d is %s, want %s (newest first)", i, r.ID, want)
		}
		if r.Delivered == nil {
			t.Fatalf("%s: no delivery time", r.ID)
		}
	}
	if list[2].Result == nil || list[2].Result.Signature != res.Signature || !list[3].ToDelete {
		t.Fatalf("results or deletes missing: %+v %+v", list[2].Result, list[3])
	}
	if list, err = s.NodeReservations(ctx, f.node, 2); err != nil || len(list) != 2 || list[0].ID != made[3].ID || list[1].ID != made[2].ID {
		t.Fatalf("limit 2: %v %d", err, len(list))
	}
	if list, err = s.NodeReservations(ctx, explorertest.NodeID(explorertest.NewKey(t)), 10); err != nil || len(list) != 0 {
		t.Fatalf("unknown node: %v %d", err, len(list))
	}
}

// pageAll reads every page of user's reservations with the given page
// size and returns the IDs in order.
func pageAll(t *testing.T, s server.Store, user string, p server.Page) []string {
	t.Helper()
	var ids []string
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("more than 100 pages: the cursor does not advance (at %v)", p.After)
		}
		list, next, err := s.ReservationsPage(t.Context(), user, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) > max(p.Limit, 1) {
			t.Fatalf("page of %d reservations, limit %d", len(list), p.Limit)
		}
		for _, r := range list {
			ids = append(ids, r.ID)
		}
		if next.IsZero() {
			return ids
		}
		if len(list) == 0 || next != server.CursorOf(list[len(list)-1]) {
			t.Fatalf("next %v is not the cursor of the page's last reservation", next)
		}
		// The cursor travels as text.
		if p.After, err = server.ParseCursor(next.String()); err != nil {
			t.Fatal(err)
		}
	}
}

func testReservationsPage(t *testing.T, s server.Store) {
	f := newFixture(t, s)
	base := time.Now().UTC().Truncate(time.Second)
	// Out of order, several in one microsecond, one with a result.
	var made []*provision.Reservation
	for i, off := range []time.Duration{5, 1, 3, 1, 1, 0, 4, 2, 1, 3} {
		r, _ := f.create(t, s, func(r *provision.Reservation) {
			r.Created = base.Add(off*time.Second - time.Minute).Add(time.Duration(i%2) * time.Nanosecond)
		})
		made = append(made, r)
	}
	if _, errs, err := s.PutResults(t.Context(), []*provision.Result{f.result(t, made[3], time.Now())},
		func(int, *provision.Reservation) error { return nil }); err != nil || errs[0] != nil {
		t.Fatalf("storing a result: %v %v", err, errs)
	}
	g := newFixture(t, s)
	g.create(t, s, nil) // another user's
	sort.Slice(made, func(i, j int) bool {
		a, b := server.CursorOf(made[i]), server.CursorOf(made[j])
		return a.Micros < b.Micros || a.Micros == b.Micros && a.ID < b.ID
	})
	var want []string
	for _, r := range made {
		want = append(want, r.ID)
	}
	user := explorertest.UserID(f.user)
	for _, limit := range []int{1, 3, 4, 10, 11, 500} {
		if got := pageAll(t, s, user, server.Page{Limit: limit}); !slices.Equal(got, want) {
			t.Fatalf("pages of %d: %v, want %v", limit, got, want)
		}
	}
	list, next, err := s.ReservationsPage(t.Context(), user, server.Page{Limit: 10})
	if err != nil || len(list) != 10 || !next.IsZero() {
		t.Fatalf("one page of all 10: %d, next %v, %v; want 10 and no next", len(list), next, err)
	}
	for _, r := range list {
		if r.Verify() != nil {
			t.Fatalf("listed reservation %s does not verify", r.ID)
		}
	}
	withResult := 0
	for _, r := range list {
		if r.Result != nil {
			withResult++
		}
	}
	if withResult != 1 {
		t.Fatalf("%d listed reservations carry a result, want 1", withResult)
	}
	// A cursor past the end, and a user without reservations.
	last := server.CursorOf(made[len(made)-1])
	if list, next, err := s.ReservationsPage(t.Context(), user, server.Page{After: last, Limit: 5}); err != nil || len(list) != 0 || !next.IsZero() {
		t.Fatalf("after the last: %d, %v, %v", len(list), next, err)
	}
	if list, _, err := s.ReservationsPage(t.Context(), explorertest.UserID(explorertest.NewKey(t)), server.Page{Limit: 5}); err != nil || len(list) != 0 {
		t.Fatalf("a user without reservations: %d, %v", len(list), err)
	}
}

// testReservationsPageBytes: a page stops before the reservation that
// would pass MaxBytes, but always holds one.
func testReservationsPageBytes(t *testing.T, s server.Store) {
	f := newFixture(t, s)
	big := func(n int) func(*provision.Reservation) {
		return func(r *provision.Reservation) {
			r.Type = "blob"
			r.Data = json.RawMessage(fmt.Sprintf("%q", strings.Repeat("x", n)))
			r.Reference = fmt.Sprint(len(r.Reference), r.Created.UnixNano(), rand.Int64()) // a digest of its own
		}
	}
	for range 6 {
		f.create(t, s, big(10_000))
	}
	user := explorertest.UserID(f.user)
	list, next, err := s.ReservationsPage(t.Context(), user, server.Page{Limit: 100, MaxBytes: 25_000})
	if err != nil || len(list) != 2 || next.IsZero() {
		t.Fatalf("a page of 25,000 bytes of 10,000-byte reservations: %d, next %v, %v; want 2 and a next", len(list), next, err)
	}
	list, _, err = s.ReservationsPage(t.Context(), user, server.Page{Limit: 100, MaxBytes: 10})
	if err != nil || len(list) != 1 {
		t.Fatalf("a page smaller than one reservation: %d, %v; want 1", len(list), err)
	}
	if got := pageAll(t, s, user, server.Page{Limit: 100, MaxBytes: 25_000}); len(got) != 6 {
		t.Fatalf("all pages: %d reservations, want 6", len(got))
	}
}

func testQuota(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	now := time.Now()
	// An expired one and a deleted one do not count.
	f.create(t, s, func(r *provision.Reservation) { r.Created = now.Add(-2 * time.Hour).UTC() })
	del, _ := f.create(t, s, nil)
	sig := func() string { d := *del; d.SignDelete(f.user); return d.DeleteSignature }()
	if _, _, err := s.MarkDelete(ctx, del.ID, deleteCheck(sig)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.CreateReservationWithin(ctx, f.reservation(nil), now, server.Quota{MaxActive: 3}); err != nil {
			t.Fatalf("reservation %d of a quota of 3: %v", i+1, err)
		}
	}
	_, seq, _ := s.Node(ctx, f.node)
	if _, err := s.CreateReservationWithin(ctx, f.reservation(nil), now, server.Quota{MaxActive: 3}); !errors.Is(err, server.ErrQuota) {
		t.Fatalf("the fourth active reservation: %v, want ErrQuota", err)
	}
	if _, seq2, _ := s.Node(ctx, f.node); seq2 != seq {
		t.Fatalf("a refusal took sequence number %d", seq2)
	}
	// Another user has a quota of their own; no quota is no limit.
	g := newFixture(t, s)
	if _, err := s.CreateReservationWithin(ctx, g.reservation(nil), now, server.Quota{MaxActive: 3}); err != nil {
		t.Fatalf("another user: %v", err)
	}
	if _, err := s.CreateReservationWithin(ctx, f.reservation(nil), now, server.Quota{MaxActive: 0}); err != nil {
		t.Fatalf("no quota: %v", err)
	}
	// Later, when the first three have expired, there is room again.
	if _, err := s.CreateReservationWithin(ctx, f.reservation(nil), now.Add(2*time.Hour), server.Quota{MaxActive: 3}); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	// Deleting one frees its place.
	h := newFixture(t, s)
	var first *provision.Reservation
	for i := range 2 {
		r := h.reservation(nil)
		if _, err := s.CreateReservationWithin(ctx, r, now, server.Quota{MaxActive: 2}); err != nil {
			t.Fatalf("reservation %d of a quota of 2: %v", i+1, err)
		}
		if first == nil {
			first = r
		}
	}
	if _, err := s.CreateReservationWithin(ctx, h.reservation(nil), now, server.Quota{MaxActive: 2}); !errors.Is(err, server.ErrQuota) {
		t.Fatalf("the third of 2: %v, want ErrQuota", err)
	}
	d := *first
	d.SignDelete(h.user)
	if _, _, err := s.MarkDelete(ctx, first.ID, deleteCheck(d.DeleteSignature)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateReservationWithin(ctx, h.reservation(nil), now, server.Quota{MaxActive: 2}); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}

// testQuotaConcurrent: concurrent submissions of one user never pass the
// quota together.
func testQuotaConcurrent(t *testing.T, s server.Store) {
	f := newFixture(t, s)
	const quota, tries = 5, 24
	rs := make([]*provision.Reservation, tries)
	for i := range rs {
		rs[i] = f.reservation(nil)
	}
	if ok, refused := createAll(t, s, rs, server.Quota{MaxActive: quota}); ok != quota || refused != tries-quota {
		t.Fatalf("%d accepted, %d refused; want %d and %d", ok, refused, quota, tries-quota)
	}
}

// createAll submits rs at once under q and counts those accepted and
// those refused by the quota (anything else fails t).
func createAll(t *testing.T, s server.Store, rs []*provision.Reservation, q server.Quota) (ok, refused int) {
	now := time.Now()
	var oks, refusals atomic.Int32
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() {
			_, err := s.CreateReservationWithin(t.Context(), r, now, q)
			switch {
			case err == nil:
				oks.Add(1)
			case errors.Is(err, server.ErrQuota):
				refusals.Add(1)
			default:
				t.Errorf("create: %v", err)
			}
		})
	}
	wg.Wait()
	return int(oks.Load()), int(refusals.Load())
}

// sized returns a mutation that makes a volume reservation size GiB of
// SSD, with its own creation time (so its own digest) when nth differs.
func sized(size int64, nth int) func(*provision.Reservation) {
	return func(r *provision.Reservation) {
		r.Data = []byte(fmt.Sprintf(`{"size":%d,"type":"ssd"}`, size))
		r.Created = r.Created.Add(-time.Duration(nth) * time.Second)
	}
}

// testUnitQuota: the units of a user's active reservations (priced by
// the nodes' table) are limited per unit; expired and deleted ones do not
// count, another user has a quota of their own, a delete frees its units,
// and a unit not limited is not checked.
func testUnitQuota(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	now := time.Now()
	q := server.Quota{MaxUnits: provision.Units{SRU: 10}}
	f.create(t, s, func(r *provision.Reservation) {
		sized(50, 0)(r)
		r.Created = now.Add(-2 * time.Hour).UTC()
	})
	del, _ := f.create(t, s, sized(50, 1))
	d := *del
	d.SignDelete(f.user)
	if _, _, err := s.MarkDelete(ctx, del.ID, deleteCheck(d.DeleteSignature)); err != nil {
		t.Fatal(err)
	}
	three := f.reservation(sized(3, 2))
	for _, r := range []*provision.Reservation{three, f.reservation(sized(4, 3))} {
		if _, err := s.CreateReservationWithin(ctx, r, now, q); err != nil {
			t.Fatalf("within 10 GiB SRU: %v", err)
		}
	}
	_, seq, _ := s.Node(ctx, f.node)
	_, err := s.CreateReservationWithin(ctx, f.reservation(sized(5, 4)), now, q)
	want := "would use 12 of 10 GiB SRU at this explorer"
	if !errors.Is(err, server.ErrQuota) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), explorertest.UserID(f.user)) {
		t.Fatalf("past 10 GiB SRU: %v, want ErrQuota naming the user and %q", err, want)
	}
	if _, seq2, _ := s.Node(ctx, f.node); seq2 != seq {
		t.Fatalf("a refusal took sequence number %d", seq2)
	}
	if _, err := s.CreateReservationWithin(ctx, f.reservation(sized(3, 5)), now, q); err != nil {
		t.Fatalf("exactly 10 GiB SRU: %v", err)
	}
	// A limit on another unit does not weigh SSD volumes.
	if _, err := s.CreateReservationWithin(ctx, f.reservation(sized(100, 6)), now, server.Quota{MaxUnits: provision.Units{HRU: 1, CRU: 1}}); err != nil {
		t.Fatalf("an SSD volume under HRU and CRU limits: %v", err)
	}
	// Another user's units are theirs.
	g := newFixture(t, s)
	if _, err := s.CreateReservationWithin(ctx, g.reservation(sized(10, 0)), now, q); err != nil {
		t.Fatalf("another user: %v", err)
	}
	// Deleting frees the units; both limits apply together.
	d = *three
	d.SignDelete(f.user)
	if _, _, err := s.MarkDelete(ctx, three.ID, deleteCheck(d.DeleteSignature)); err != nil {
		t.Fatal(err)
	}
	q2 := server.Quota{MaxActive: 10, MaxUnits: provision.Units{SRU: 110}}
	if _, err := s.CreateReservationWithin(ctx, f.reservation(sized(3, 7)), now, q2); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
	_, err = s.CreateReservationWithin(ctx, f.reservation(sized(1, 8)), now, q2)
	if !errors.Is(err, server.ErrQuota) || !strings.Contains(err.Error(), "would use 111 of 110 GiB SRU") {
		t.Fatalf("past 110 GiB SRU with room in the count: %v", err)
	}
}

// testUnitQuotaConcurrent: concurrent submissions of one user never pass
// the units quota together.
func testUnitQuotaConcurrent(t *testing.T, s server.Store) {
	f := newFixture(t, s)
	const fit, tries = 5, 24
	rs := make([]*provision.Reservation, tries)
	for i := range rs {
		rs[i] = f.reservation(sized(2, i))
	}
	q := server.Quota{MaxUnits: provision.Units{SRU: 2 * fit}}
	if ok, refused := createAll(t, s, rs, q); ok != fit || refused != tries-fit {
		t.Fatalf("%d accepted, %d refused; want %d and %d", ok, refused, fit, tries-fit)
	}
}

// testUnitQuotaUpdate: an update's units replace the stored version's in
// the user's sum; one past the quota is refused and stores nothing.
func testUnitQuotaUpdate(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	now := time.Now()
	q := server.Quota{MaxUnits: provision.Units{SRU: 10}}
	a, b := f.reservation(sized(4, 0)), f.reservation(sized(5, 1))
	for _, r := range []*provision.Reservation{a, b} {
		if _, err := s.CreateReservationWithin(ctx, r, now, q); err != nil {
			t.Fatal(err)
		}
	}
	pass := func(*provision.Reservation) error { return nil }
	_, err := s.UpdateReservationWithin(ctx, a.ID, f.next(a, 6), now, q, pass)
	if !errors.Is(err, server.ErrQuota) || !strings.Contains(err.Error(), "would use 11 of 10 GiB SRU at this explorer") {
		t.Fatalf("an update past the quota: %v", err)
	}
	if got, _ := s.Reservation(ctx, a.ID); got.Digest() != a.Digest() {
		t.Fatal("a refused update was stored")
	}
	a2 := f.next(a, 5)
	if _, err := s.UpdateReservationWithin(ctx, a.ID, a2, now, q, pass); err != nil {
		t.Fatalf("an update to exactly the quota: %v", err)
	}
	// The sum now counts version 2 (5 GiB), not version 1.
	if _, err := s.CreateReservationWithin(ctx, f.reservation(sized(1, 2)), now, q); !errors.Is(err, server.ErrQuota) || !strings.Contains(err.Error(), "would use 11 of 10") {
		t.Fatalf("a creation after the update: %v", err)
	}
	// The check runs before the quota: its refusal wins.
	refused := errors.New("refused")
	if _, err := s.UpdateReservationWithin(ctx, b.ID, f.next(b, 500), now, q, func(*provision.Reservation) error { return refused }); !errors.Is(err, refused) {
		t.Fatalf("a refused check: %v", err)
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

// next returns the next version of r with its size (its data) set to
// size, signed by f's user.
func (f *fixture) next(r *provision.Reservation, size int64) *provision.Reservation {
	n := explorertest.Volume(f.node, size)
	n.ID, n.Created, n.Duration, n.Reference = r.ID, r.Created, r.Duration, r.Reference
	n.Version, n.Previous = r.Version+1, r.Digest()
	n.Sign(f.user)
	return n
}

func testUpdateReservation(t *testing.T, s server.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	r, _ := f.create(t, s, nil)
	if _, errs, err := s.PutResults(ctx, []*provision.Result{f.result(t, r, time.Now())}, func(int, *provision.Reservation) error { return nil }); err != nil || errs[0] != nil {
		t.Fatalf("storing a result: %v %v", err, errs)
	}
	next := f.next(r, 100)
	refused := errors.New("refused")
	var seen *provision.Reservation
	if _, err := s.UpdateReservation(ctx, r.ID, next, func(cur *provision.Reservation) error { seen = cur; return refused }); !errors.Is(err, refused) {
		t.Fatalf("refused update: %v", err)
	}
	if seen == nil || seen.Digest() != r.Digest() || seen.Result == nil {
		t.Fatalf("check saw %+v, want the stored version with its result", seen)
	}
	if got, _ := s.Reservation(ctx, r.ID); got.Digest() != r.Digest() {
		t.Fatal("a refused update was stored")
	}
	pass := func(*provision.Reservation) error { return nil }
	seq, err := s.UpdateReservation(ctx, r.ID, next, pass)
	if err != nil || seq != 2 {
		t.Fatalf("update: seq %d, %v; want seq 2", seq, err)
	}
	got, err := s.Reservation(ctx, r.ID)
	if err != nil || got.Digest() != next.Digest() || got.Version != r.Version+1 || got.Previous != r.Digest() || got.Result != nil || got.Delivered != nil {
		t.Fatalf("stored after the update: %+v, %v; want version 2 without a result, not delivered", got, err)
	}
	evs, _, err := s.Events(ctx, f.node, 1, 10)
	var ev provision.Reservation
	if err != nil || len(evs) != 1 || json.Unmarshal(evs[0].Reservation, &ev) != nil || ev.Digest() != next.Digest() || ev.ID != r.ID || ev.Verify() != nil {
		t.Fatalf("events after the update: %d, %v; want the new version", len(evs), err)
	}
	st, err := s.State(ctx, f.node, time.Now())
	if err != nil || len(st.Reservations) != 1 || st.Reservations[0].Digest != next.Digest() || st.Reservations[0].Version != r.Version+1 || st.Seq != 2 {
		t.Fatalf("state after the update %+v, %v", st, err)
	}
	// Replays: the new digest again, and the old version under a new ID.
	if _, err := s.UpdateReservation(ctx, r.ID, next, pass); !errors.Is(err, server.ErrDuplicate) {
		t.Fatalf("the same update again: %v, want ErrDuplicate", err)
	}
	old := *r
	old.ID, old.Result = "", nil
	if _, err := s.CreateReservation(ctx, &old); !errors.Is(err, server.ErrDuplicate) {
		t.Fatalf("a replay of the replaced version: %v, want ErrDuplicate", err)
	}
	if _, err := s.UpdateReservation(ctx, "nope", f.next(r, 101), pass); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("update of an unknown reservation: %v", err)
	}
	if list, err := s.ReservationsOf(ctx, explorertest.UserID(f.user)); err != nil || len(list) != 1 || list[0].Version != r.Version+1 {
		t.Fatalf("the user's reservations after the update: %d, %v", len(list), err)
	}

	// Expiry frees every version's digest.
	now := time.Now().UTC().Truncate(time.Second)
	gone, _ := f.create(t, s, func(r *provision.Reservation) { r.Created, r.Duration = now.Add(-3*time.Hour), time.Hour })
	gone2 := f.next(gone, 200)
	if _, err := s.UpdateReservation(ctx, gone.ID, gone2, pass); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Expire(ctx, now.Add(-time.Hour)); err != nil || n != 1 {
		t.Fatalf("expire: %d, %v", n, err)
	}
	for _, v := range []*provision.Reservation{gone, gone2} {
		c := *v
		c.ID, c.Result, c.Previous = "", nil, ""
		c.Sign(f.user)
		if _, err := s.CreateReservation(ctx, &c); err != nil {
			t.Fatalf("a digest of an expired reservation is still held: %v", err)
		}
	}
	again := *gone
	again.ID, again.Result = "", nil
	if _, err := s.CreateReservation(ctx, &again); !errors.Is(err, server.ErrDuplicate) {
		t.Fatalf("created twice: %v", err) // the loop above took it
	}
}
