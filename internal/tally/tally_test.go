package tally_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/edgeprov/provisiond/internal/tally"
	"github.com/edgeprov/provisiond/provision"
)

// Set and Remove are idempotent: repeating an event never counts twice,
// and the total always equals a tally built afresh from the same set.
func TestTally(t *testing.T) {
	tests := []struct {
		name string
		ops  func(t *tally.Tally)
		want provision.Units
		n    map[provision.ReservationType]uint64
	}{
		{"empty", func(*tally.Tally) {}, provision.Units{}, map[provision.ReservationType]uint64{}},
		{"set-twice", func(t *tally.Tally) {
			t.Set("a", "u1", provision.VolumeReservation, provision.Units{SRU: 2})
			t.Set("a", "u1", provision.VolumeReservation, provision.Units{SRU: 2})
		}, provision.Units{SRU: 2}, map[provision.ReservationType]uint64{provision.VolumeReservation: 1}},
		{"replace", func(t *tally.Tally) {
			t.Set("a", "u1", provision.ContainerReservation, provision.Units{CRU: 1, MRU: 0.5})
			t.Set("a", "u1", provision.ContainerReservation, provision.Units{CRU: 2, MRU: 0.25})
		}, provision.Units{CRU: 2, MRU: 0.25}, map[provision.ReservationType]uint64{provision.ContainerReservation: 1}},
		{"remove-twice", func(t *tally.Tally) {
			t.Set("a", "u1", provision.VolumeReservation, provision.Units{HRU: 3})
			t.Set("b", "u1", provision.VolumeReservation, provision.Units{HRU: 1})
			t.Remove("a")
			t.Remove("a")
			t.Remove("never")
		}, provision.Units{HRU: 1}, map[provision.ReservationType]uint64{provision.VolumeReservation: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tl := tally.New()
			tc.ops(tl)
			if tl.Total() != tc.want {
				t.Errorf("total %+v, want %+v", tl.Total(), tc.want)
			}
			if fmt.Sprint(tl.Workloads()) != fmt.Sprint(tc.n) {
				t.Errorf("workloads %v, want %v", tl.Workloads(), tc.n)
			}
		})
	}
}

// Each user's usage is the sum of that user's reservations alone, and a
// user whose last reservation leaves is forgotten.
func TestTallyUsers(t *testing.T) {
	tl := tally.New()
	tl.Set("a", "alice", provision.ContainerReservation, provision.Units{CRU: 2, MRU: 1})
	tl.Set("b", "alice", provision.VolumeReservation, provision.Units{SRU: 10})
	tl.Set("c", "bob", provision.ContainerReservation, provision.Units{CRU: 1, MRU: 0.5})
	want := map[string]provision.Usage{
		"alice": {Units: provision.Units{CRU: 2, MRU: 1, SRU: 10}, Workloads: 2},
		"bob":   {Units: provision.Units{CRU: 1, MRU: 0.5}, Workloads: 1},
	}
	if got := tl.Users(); !maps.Equal(got, want) {
		t.Fatalf("users %v, want %v", got, want)
	}
	tl.Set("a", "alice", provision.ContainerReservation, provision.Units{CRU: 4, MRU: 1})
	if got := tl.User("alice"); got != (provision.Usage{Units: provision.Units{CRU: 4, MRU: 1, SRU: 10}, Workloads: 2}) {
		t.Errorf("alice after a replace: %+v", got)
	}
	tl.Remove("c")
	if got := tl.User("bob"); got != (provision.Usage{}) {
		t.Errorf("bob after his last removal: %+v", got)
	}
	if _, ok := tl.Users()["bob"]; ok {
		t.Error("bob is still listed after his last removal")
	}
	if user, u, ok := tl.Get("b"); !ok || user != "alice" || u.SRU != 10 {
		t.Errorf("Get(b) = %s, %+v, %v", user, u, ok)
	}
}

func TestTallyMatchesFresh(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tl := tally.New()
	type entry struct {
		user string
		u    provision.Units
	}
	set := map[string]entry{}
	for range 10000 {
		// An ID keeps its owner, as a reservation does.
		n := rng.IntN(200)
		id, user := fmt.Sprintf("r%d", n), fmt.Sprintf("user%d", n%7)
		if rng.IntN(3) == 0 {
			tl.Remove(id)
			delete(set, id)
			continue
		}
		u := provision.Units{CRU: uint64(rng.IntN(8)), MRU: float64(rng.IntN(4096)) / 1024, SRU: float64(rng.IntN(100)) / 7}
		tl.Set(id, user, provision.ContainerReservation, u)
		set[id] = entry{user, u}
	}
	fresh := tally.New()
	for id, e := range set {
		fresh.Set(id, e.user, provision.ContainerReservation, e.u)
	}
	if tl.Total() != fresh.Total() || tl.Len() != len(set) {
		t.Errorf("after churn: %+v (%d), fresh %+v (%d)", tl.Total(), tl.Len(), fresh.Total(), len(set))
	}
	if !maps.Equal(tl.Users(), fresh.Users()) {
		t.Errorf("users after churn: %v, fresh %v", tl.Users(), fresh.Users())
	}
	for user, use := range fresh.Users() {
		if tl.User(user) != use {
			t.Errorf("User(%s) = %+v, want %+v", user, tl.User(user), use)
		}
	}
}
