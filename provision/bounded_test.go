package provision_test

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly-10", 10, "exactly-10"},
		{"0123456789abc", 10, "0123456…"},
		{"ééééé", 6, "é…"}, // never cuts a rune in two
	}
	for _, tt := range tests {
		if got := provision.Truncate(tt.in, tt.n); got != tt.want || len(got) > tt.n {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

// pendingResults returns the results waiting in the outbox for id.
func pendingResults(t testing.TB, h *harness, id string) []*provision.Result {
	t.Helper()
	entries, err := h.store.Pending(10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []*provision.Result
	for _, e := range entries {
		if e.Result != nil && e.Result.ID == id {
			out = append(out, e.Result)
		}
	}
	return out
}

// A compromised explorer hands the node a reservation with huge fields:
// what the node keeps of its refusal, and signs, is bounded.
func TestRefusalStoresBoundedFields(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.fb.SetDown(true) // results stay in the outbox, to be read
		h.start(nil)
		huge := strings.Repeat("x", 1<<20)
		r := h.user.Volume("big", "node-"+huge, 1, time.Now(), time.Hour) // another node's: refused
		r.Reference = huge
		r.Signature += huge
		r.DeleteSignature = huge
		r.Type = provision.ReservationType("volume" + huge)
		h.deliver(r)
		settle(0)
		rec := h.wantState("big", provision.Failed)
		c := rec.Reservation
		for name, v := range map[string]string{
			"node_id": c.NodeID, "user_id": c.UserID, "reference": c.Reference, "signature": c.Signature,
			"delete_signature": c.DeleteSignature, "type": string(c.Type),
		} {
			if len(v) > provision.MaxRefusedField {
				t.Errorf("stored %s has %d bytes, want at most %d", name, len(v), provision.MaxRefusedField)
			}
		}
		for _, tr := range rec.History {
			if len(tr.Message) > provision.MaxMessageLength {
				t.Errorf("stored transition message has %d bytes", len(tr.Message))
			}
		}
		results := pendingResults(t, h, "big")
		if len(results) != 1 {
			t.Fatalf("%d results pending, want 1", len(results))
		}
		if res := results[0]; len(res.Message) > provision.MaxMessageLength || len(res.Type) > provision.MaxRefusedField || res.State != provision.StateError {
			t.Errorf("result: state %s, %d bytes of message, %d of type", res.State, len(res.Message), len(res.Type))
		}
		if rec.Result == nil || len(rec.Result.Message) > provision.MaxMessageLength {
			t.Errorf("record's result not bounded: %+v", rec.Result)
		}
	})
}

// A repeated event does not enqueue the same result again while it waits
// in the outbox: neither an accepted reservation's, nor a refusal kept as
// a record, nor one that could not be kept (an unsafe id).
func TestRepeatedEventEnqueuesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.fb.SetDown(true)
		h.start(nil)
		ok := h.user.Volume("v1", testNode, 1, time.Now(), time.Hour)
		refused := h.user.Volume("other", "node-2", 1, time.Now(), time.Hour)
		unsafe := h.user.Volume("../x", testNode, 1, time.Now(), time.Hour)
		for range 5 {
			for _, r := range []*provision.Reservation{ok, refused, unsafe} {
				h.deliver(r)
			}
			settle(time.Second)
		}
		for _, id := range []string{"v1", "other", "../x"} {
			results := pendingResults(t, h, id)
			seen := map[string]int{}
			for _, res := range results {
				seen[res.Signature]++
			}
			for sig, n := range seen {
				if n > 1 {
					t.Errorf("%s: the same result (%.8s…) is pending %d times", id, sig, n)
				}
			}
			if len(results) == 0 {
				t.Errorf("%s: no result pending", id)
			}
		}
	})
}
