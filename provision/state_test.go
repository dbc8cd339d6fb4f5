package provision_test

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

func TestCanMove(t *testing.T) {
	// allowed is the state machine of DESIGN.md, written out by hand:
	// accepted → provisioning → deployed | error, deployed → deleting →
	// deleted, plus retries (x → x), repairs (deployed → provisioning) and
	// cleanup of failed or never-started workloads.
	allowed := map[[2]provision.State]bool{
		{provision.Accepted, provision.Provisioning}:     true,
		{provision.Accepted, provision.Failed}:           true,
		{provision.Accepted, provision.Deleting}:         true,
		{provision.Accepted, provision.Deleted}:          true,
		{provision.Provisioning, provision.Provisioning}: true,
		{provision.Provisioning, provision.Deployed}:     true,
		{provision.Provisioning, provision.Failed}:       true,
		{provision.Provisioning, provision.Deleting}:     true,
		{provision.Deployed, provision.Deployed}:         true,
		{provision.Deployed, provision.Deleting}:         true,
		{provision.Deployed, provision.Failed}:           true,
		{provision.Deployed, provision.Provisioning}:     true,
		{provision.Deleting, provision.Deleting}:         true,
		{provision.Deleting, provision.Deleted}:          true,
		{provision.Failed, provision.Deleting}:           true,
		{provision.Failed, provision.Deleted}:            true,
	}
	states := append(provision.States, "bogus")
	for _, from := range states {
		for _, to := range states {
			t.Run(fmt.Sprintf("%s-to-%s", from, to), func(t *testing.T) {
				want := allowed[[2]provision.State{from, to}]
				if got := provision.CanMove(from, to); got != want {
					t.Errorf("CanMove(%s, %s) = %v, want %v", from, to, got, want)
				}
			})
		}
	}
}

func TestStateClasses(t *testing.T) {
	tests := []struct {
		state         provision.State
		active, final bool
	}{
		{provision.Accepted, false, false},
		{provision.Provisioning, true, false},
		{provision.Deployed, true, false},
		{provision.Failed, false, true},
		{provision.Deleting, true, false},
		{provision.Deleted, false, true},
	}
	if len(tests) != len(provision.States) {
		t.Fatalf("table covers %d states, States has %d", len(tests), len(provision.States))
	}
	for _, tt := range tests {
		t.Run(string(tt.state), func(t *testing.T) {
			if got := tt.state.Active(); got != tt.active {
				t.Errorf("Active() = %v, want %v", got, tt.active)
			}
			if got := tt.state.Final(); got != tt.final {
				t.Errorf("Final() = %v, want %v", got, tt.final)
			}
			if tt.final && !tt.active {
				for _, to := range provision.States {
					if provision.CanMove(tt.state, to) && to.Active() && to != provision.Deleting {
						t.Errorf("final state %s may move back to active %s", tt.state, to)
					}
				}
			}
		})
	}
}

func TestRecordMove(t *testing.T) {
	at := fixedCreated
	rec := &provision.Record{Reservation: &provision.Reservation{ID: "r-1"}, State: provision.Accepted}
	if rec.ID() != "r-1" {
		t.Fatalf("ID() = %q", rec.ID())
	}

	rec.Move(provision.Provisioning, at, "")
	rec.Attempts = 3
	rec.Move(provision.Provisioning, at.Add(time.Second), "retry")
	if rec.Attempts != 3 {
		t.Errorf("Attempts after a retry in the same state = %d, want 3 (kept)", rec.Attempts)
	}
	rec.Move(provision.Deployed, at.Add(2*time.Second), "")
	if rec.Attempts != 0 {
		t.Errorf("Attempts after a change of state = %d, want 0", rec.Attempts)
	}
	if rec.State != provision.Deployed || !rec.Updated.Equal(at.Add(2*time.Second)) {
		t.Errorf("State, Updated = %s, %s", rec.State, rec.Updated)
	}
	want := []provision.Transition{
		{State: provision.Provisioning, At: at},
		{State: provision.Provisioning, At: at.Add(time.Second), Message: "retry"},
		{State: provision.Deployed, At: at.Add(2 * time.Second)},
	}
	if !reflect.DeepEqual(rec.History, want) {
		t.Errorf("History = %+v, want %+v", rec.History, want)
	}
}

func TestRecordMoveHistoryCap(t *testing.T) {
	tests := []struct {
		name  string
		moves int
		want  int
	}{
		{"under-cap", provision.MaxHistory - 1, provision.MaxHistory - 1},
		{"at-cap", provision.MaxHistory, provision.MaxHistory},
		{"over-cap", provision.MaxHistory + 1, provision.MaxHistory},
		{"far-over-cap", 10 * provision.MaxHistory, provision.MaxHistory},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &provision.Record{Reservation: &provision.Reservation{ID: "r"}}
			for i := range tt.moves {
				rec.Move(provision.Provisioning, fixedCreated.Add(time.Duration(i)*time.Second), fmt.Sprint(i))
			}
			if len(rec.History) != tt.want {
				t.Fatalf("len(History) = %d, want %d", len(rec.History), tt.want)
			}
			// The newest transitions are kept, in order.
			for i, tr := range rec.History {
				if want := fmt.Sprint(tt.moves - tt.want + i); tr.Message != want {
					t.Fatalf("History[%d].Message = %q, want %q", i, tr.Message, want)
				}
			}
			if tt.moves > provision.MaxHistory && cap(rec.History) > 2*provision.MaxHistory {
				t.Errorf("cap(History) = %d: the trimmed history still holds dropped entries", cap(rec.History))
			}
		})
	}
}

func TestUnitsArithmetic(t *testing.T) {
	a := provision.Units{CRU: 4, MRU: 8, SRU: 100, HRU: 1000}
	b := provision.Units{CRU: 1, MRU: 0.5, SRU: 25.5, HRU: 0}
	tests := []struct {
		name string
		got  provision.Units
		want provision.Units
	}{
		{"add", a.Add(b), provision.Units{CRU: 5, MRU: 8.5, SRU: 125.5, HRU: 1000}},
		{"add-zero", a.Add(provision.Units{}), a},
		{"sub", a.Sub(b), provision.Units{CRU: 3, MRU: 7.5, SRU: 74.5, HRU: 1000}},
		{"sub-floors-at-zero", b.Sub(a), provision.Units{}},
		{"sub-equal", a.Sub(a), provision.Units{}},
		{"sub-mixed", provision.Units{CRU: 1, MRU: 10}.Sub(provision.Units{CRU: 2, MRU: 4}), provision.Units{MRU: 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %+v, want %+v", tt.got, tt.want)
			}
		})
	}
}

func TestUnitsShort(t *testing.T) {
	limit := provision.Units{CRU: 4, MRU: 8, SRU: 100, HRU: 1000}
	tests := []struct {
		name string
		u    provision.Units
		want []string
	}{
		{"fits", provision.Units{CRU: 1, MRU: 1, SRU: 1, HRU: 1}, nil},
		{"exactly-fits", limit, nil},
		{"zero", provision.Units{}, nil},
		{"cru", provision.Units{CRU: 5}, []string{"cru"}},
		{"mru-fraction", provision.Units{MRU: 8.001}, []string{"mru"}},
		{"sru-and-hru", provision.Units{SRU: 101, HRU: 1001}, []string{"sru", "hru"}},
		{"all", provision.Units{CRU: 5, MRU: 9, SRU: 101, HRU: 1001}, []string{"cru", "mru", "sru", "hru"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.u.Short(limit); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Short() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCapacityUsable(t *testing.T) {
	tests := []struct {
		name string
		c    provision.Capacity
		want provision.Units
	}{
		{"no-reserve", provision.Capacity{Total: provision.Units{CRU: 8, MRU: 32}}, provision.Units{CRU: 8, MRU: 32}},
		{"reserve", provision.Capacity{
			Total:    provision.Units{CRU: 8, MRU: 32, SRU: 500, HRU: 4000},
			Reserved: provision.Units{CRU: 1, MRU: 3.2, SRU: 20},
		}, provision.Units{CRU: 7, MRU: 28.8, SRU: 480, HRU: 4000}},
		{"reserve-exceeds-total", provision.Capacity{
			Total:    provision.Units{CRU: 1, MRU: 0.5},
			Reserved: provision.Units{CRU: 2, MRU: 1},
		}, provision.Units{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Usable(); got != tt.want {
				t.Errorf("Usable() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRecordJSONRoundTrip(t *testing.T) {
	f := newFixture(t)
	r := f.signed(t, provision.ContainerReservation)
	rec := &provision.Record{
		Reservation: r,
		Digest:      r.Digest(),
		State:       provision.Accepted,
		Units:       provision.Units{CRU: 1, MRU: 0.25, SRU: 1},
		Result:      f.result(t, r, provision.StateOk, "", `{"ip":"10.20.3.5"}`),
	}
	rec.Move(provision.Provisioning, fixedCreated, "")
	rec.Move(provision.Deployed, fixedCreated.Add(time.Second), "")
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var got provision.Record
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Reservation.Digest() != rec.Digest || got.State != rec.State || got.Units != rec.Units || len(got.History) != 2 {
		t.Fatalf("record changed in a JSON round trip: %+v", got)
	}
	if err := got.Reservation.Verify(); err != nil {
		t.Errorf("stored reservation no longer verifies: %v", err)
	}
	if err := got.Result.Verify(f.node.Public().(ed25519.PublicKey)); err != nil {
		t.Errorf("stored result no longer verifies: %v", err)
	}
}

func TestCapacityAdmit(t *testing.T) {
	c := provision.Capacity{Total: provision.Units{CRU: 8, MRU: 16, SRU: 100}, Reserved: provision.Units{CRU: 2, MRU: 4}}
	tests := []struct {
		name       string
		used, want provision.Units
		short      string // "" when admitted
		never      bool
	}{
		{"fits", provision.Units{CRU: 2}, provision.Units{CRU: 4, MRU: 12}, "", false},
		{"fits-exactly", provision.Units{SRU: 50}, provision.Units{SRU: 50}, "", false},
		{"short-beside-used", provision.Units{CRU: 5, MRU: 10}, provision.Units{CRU: 2, MRU: 4}, "cru, mru", false},
		{"never-fits", provision.Units{}, provision.Units{CRU: 7}, "cru", true},
		{"reserve-kept", provision.Units{}, provision.Units{MRU: 13}, "mru", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Admit(tt.used, tt.want)
			if tt.short == "" {
				if err != nil {
					t.Fatalf("Admit = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, provision.ErrNoCapacity) || provision.IsTemporary(err) {
				t.Fatalf("Admit = %v, want a permanent ErrNoCapacity", err)
			}
			if !strings.Contains(err.Error(), ": "+tt.short) {
				t.Errorf("Admit = %v, want it to name %q", err, tt.short)
			}
			if never := strings.Contains(err.Error(), "more than the node's usable capacity"); never != tt.never {
				t.Errorf("Admit = %v: says it can never fit: %v, want %v", err, never, tt.never)
			}
		})
	}
}
