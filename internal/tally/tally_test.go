package tally_test

import (
	"fmt"
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
			t.Set("a", provision.VolumeReservation, provision.Units{SRU: 2})
			t.Set("a", provision.VolumeReservation, provision.Units{SRU: 2})
		}, provision.Units{SRU: 2}, map[provision.ReservationType]uint64{provision.VolumeReservation: 1}},
		{"replace", func(t *tally.Tally) {
			t.Set("a", provision.ContainerReservation, provision.Units{CRU: 1, MRU: 0.5})
			t.Set("a", provision.ContainerReservation, provision.Units{CRU: 2, MRU: 0.25})
		}, provision.Units{CRU: 2, MRU: 0.25}, map[provision.ReservationType]uint64{provision.ContainerReservation: 1}},
		{"remove-twice", func(t *tally.Tally) {
			t.Set("a", provision.VolumeReservation, provision.Units{HRU: 3})
			t.Set("b", provision.VolumeReservation, provision.Units{HRU: 1})
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

func TestTallyMatchesFresh(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tl := tally.New()
	set := map[string]provision.Units{}
	for range 10000 {
		id := fmt.Sprintf("r%d", rng.IntN(200))
		if rng.IntN(3) == 0 {
			tl.Remove(id)
			delete(set, id)
			continue
		}
		u := provision.Units{CRU: uint64(rng.IntN(8)), MRU: float64(rng.IntN(4096)) / 1024, SRU: float64(rng.IntN(100)) / 7}
		tl.Set(id, provision.ContainerReservation, u)
		set[id] = u
	}
	fresh := tally.New()
	for id, u := range set {
		fresh.Set(id, provision.ContainerReservation, u)
	}
	if tl.Total() != fresh.Total() || tl.Len() != len(set) {
		t.Errorf("after churn: %+v (%d), fresh %+v (%d)", tl.Total(), tl.Len(), fresh.Total(), len(set))
	}
}
