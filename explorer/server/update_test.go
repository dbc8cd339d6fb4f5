package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// PUT /api/v1/reservations/{id} accepts only the owner's next version
// naming the stored digest, and relays it to the node, which then holds
// the reservation at the new version; a replayed version is refused.
func TestUpdateReservation(t *testing.T) {
	xs := explorertest.New(t)
	node, owner, other := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	nc := xs.RegisterNode(t, node)
	v1 := explorertest.Volume(explorertest.NodeID(node), 1)
	id := xs.Reserve(t, owner, v1)
	next := func(size int64, mut func(*provision.Reservation)) *provision.Reservation {
		n := explorertest.Volume(explorertest.NodeID(node), size)
		n.ID, n.Created, n.Duration, n.Reference = id, v1.Created, v1.Duration, v1.Reference
		n.Version, n.Previous = v1.Version+1, v1.Digest()
		if mut != nil {
			mut(n)
		}
		n.Sign(owner)
		return n
	}
	v2 := next(2, nil)
	put := func(key []byte, r *provision.Reservation) raw {
		return raw{method: "PUT", path: "/api/v1/reservations/" + id, body: testutil.MustJSON(t, r), key: key}
	}
	byOther := *v2
	byOther.Sign(other)
	tests := []struct {
		name   string
		req    raw
		status int
		msg    string
	}{
		{"another-user", put(other, &byOther), http.StatusForbidden, "only the owner"},
		{"request-not-by-the-owner", put(other, v2), http.StatusForbidden, "not by the reservation's user"},
		{"no-previous", put(owner, next(2, func(r *provision.Reservation) { r.Previous = "" })), http.StatusBadRequest, "previous"},
		{"wrong-previous", put(owner, next(2, func(r *provision.Reservation) { r.Previous = strings.Repeat("0", 64) })), http.StatusConflict, "previous digest"},
		{"skips-a-version", put(owner, next(2, func(r *provision.Reservation) { r.Version += 2 })), http.StatusConflict, "skips"},
		{"changes-created", put(owner, next(2, func(r *provision.Reservation) { r.Created = r.Created.Add(-time.Minute) })), http.StatusConflict, "created"},
		{"changes-the-type", put(owner, next(2, func(r *provision.Reservation) { r.Type = provision.NetworkReservation })), http.StatusConflict, "type changes"},
		{"body-id-mismatch", raw{method: "PUT", path: "/api/v1/reservations/x", body: testutil.MustJSON(t, v2), key: owner}, http.StatusBadRequest, "not the path"},
		{"valid", put(owner, v2), http.StatusOK, ""},
		{"repeat-is-a-replay", put(owner, v2), http.StatusConflict, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := do(t, tt.req.build(t, xs.URL()))
			if got.status != tt.status || !strings.Contains(got.msg, tt.msg) {
				t.Fatalf("got %d %q, want %d with %q", got.status, got.msg, tt.status, tt.msg)
			}
		})
	}
	evs, _, err := nc.Poll(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[1].Reservation.Digest() != v2.Digest() || evs[1].Reservation.ID != id {
		t.Fatalf("got %d events; want the reservation, then its version 2", len(evs))
	}
	if err := provision.Validate(evs[1].Reservation, explorertest.NodeID(node), time.Now()); err != nil {
		t.Fatalf("the node would refuse the relayed update: %v", err)
	}
	got, err := xs.UserClient(owner).GetReservation(t.Context(), id)
	if err != nil || got.Version != v2.Version || got.Digest() != v2.Digest() {
		t.Fatalf("the explorer shows %+v, %v", got, err)
	}
	// The client's UpdateReservation: version 3.
	v3 := next(3, func(r *provision.Reservation) { r.Version, r.Previous = v2.Version+1, v2.Digest() })
	if err := xs.UserClient(owner).UpdateReservation(t.Context(), v3); err != nil {
		t.Fatal(err)
	}
	// A replay of version 1 under a new ID is refused: its digest stays held.
	replay := *v1
	replay.ID, replay.Result = "", nil
	if got := do(t, raw{method: "POST", path: "/api/v1/reservations", body: testutil.MustJSON(t, &replay), key: owner}.build(t, xs.URL())); got.status != http.StatusConflict {
		t.Fatalf("replay of version 1: %d %q", got.status, got.msg)
	}
}
