package server_test

import (
	"net/http"
	"testing"

	"github.com/edgeprov/provisiond/explorer/explorertest"
)

// TestStateSnapshot reads a node's full-state snapshot through the API: the
// active reservations with their digests and versions, as of the node's
// last event; deleted and other nodes' reservations are not in it.
func TestStateSnapshot(t *testing.T) {
	xs := explorertest.New(t)
	node, other, user := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	nc := xs.RegisterNode(t, node)
	xs.RegisterNode(t, other)
	nodeID := explorertest.NodeID(node)
	kept := explorertest.Volume(nodeID, 1)
	kept.Version = 2
	xs.Reserve(t, user, kept)
	gone := explorertest.Volume(nodeID, 2)
	xs.Reserve(t, user, gone)
	xs.Delete(t, user, gone.ID)
	xs.Reserve(t, user, explorertest.Volume(explorertest.NodeID(other), 1))
	xs.Inject(t, nodeID, `{"id":"garbage"`)

	st, err := nc.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.NodeID != nodeID || st.Seq != 4 || st.Low != 0 || len(st.Reservations) != 1 {
		t.Fatalf("state %+v; want seq 4, low 0 and one reservation", st)
	}
	if e := st.Reservations[0]; e.ID != kept.ID || e.Digest != kept.Digest() || e.Version != 2 {
		t.Fatalf("entry %+v, want %s at digest %s version 2", e, kept.ID, kept.Digest())
	}
	// Another node may not read it.
	got := do(t, raw{method: "GET", path: "/api/v1/nodes/" + nodeID + "/state", key: other}.build(t, xs.URL()))
	if got.status != http.StatusForbidden {
		t.Fatalf("another node reading the state: %d %s, want 403", got.status, got.msg)
	}
}
