package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/provision"
)

// TestFleetListAndAutoPlacement runs a real node: `provctl nodes` shows it
// up with the units it measured and the version it runs, next to a node
// that registered and reported nothing; `provctl reserve volume --node
// auto` places the volume on the real node, which deploys it, and the
// list then shows the volume's units reserved.
func TestFleetListAndAutoPlacement(t *testing.T) {
	s := harness.Start(t, harness.SetupOptions{})
	ex, user, nodeID := s.Explorer, s.User, s.NodeID
	silent := explorertest.NewKey(t)
	if err := explorer.NewClient(ex.URL(), silent, explorertest.ClientOptions()).Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	versionOut, err := user.Run(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(versionOut), "provctl"))

	nodes := func() map[string]explorer.NodeSummary {
		t.Helper()
		out, err := user.Run(t, "nodes", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var reply explorer.NodesReply
		if err := json.Unmarshal([]byte(out), &reply); err != nil {
			t.Fatalf("nodes -o json: %v: %s", err, out)
		}
		m := map[string]explorer.NodeSummary{}
		for _, n := range reply.Nodes {
			m[n.NodeID] = n
		}
		return m
	}
	harness.Eventually(t, within, "the node listed up", func() error {
		n := nodes()[nodeID]
		if n.Status != explorer.NodeUp {
			return fmt.Errorf("status %q", n.Status)
		}
		return nil
	})
	all := nodes()
	n := all[nodeID]
	if n.Version != version || n.Units.CRU.Total < 1 || n.Units.MRU.Total <= n.Units.MRU.System || n.Units.MRU.System < 1 || n.Units.SRU.Total <= 0 {
		t.Fatalf("the real node as listed: %+v; want version %q, its cores, memory above a reserve of at least 1 GiB, and its SSD", n, version)
	}
	if s := all[explorertest.NodeID(silent)].Status; s != explorer.NodeUnreported {
		t.Fatalf("a node that reported nothing is %q, want %q", s, explorer.NodeUnreported)
	}
	table, err := user.Run(t, "nodes")
	if err != nil || !strings.Contains(table, nodeID) || !strings.Contains(table, "2 nodes as of") {
		t.Fatalf("nodes table: %v\n%s", err, table)
	}

	out, err := user.Run(t, "reserve", "volume", "--node", "auto", "--size", "1", "--type", "ssd", "--duration", "1h")
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	r, _ := user.Get(t, id)
	if r.NodeID != nodeID {
		t.Fatalf("auto placed the volume on %s, want the real node %s", r.NodeID, nodeID)
	}
	user.WaitResult(t, id, provision.StateOk, within)
	harness.Eventually(t, within, "the volume's units reserved in the list", func() error {
		n := nodes()[nodeID]
		if n.Units.SRU.Reserved < 1 || n.Workloads[provision.VolumeReservation] != 1 {
			return fmt.Errorf("sru %+v, workloads %v", n.Units.SRU, n.Workloads)
		}
		if free := n.Units.SRU.Total - n.Units.SRU.System - n.Units.SRU.Reserved; n.Units.SRU.Free != max(free, 0) {
			return harness.Permanent(fmt.Errorf("sru free %v, want %v", n.Units.SRU.Free, free))
		}
		return nil
	})
	if _, err := user.Run(t, "delete", id); err != nil {
		t.Fatal(err)
	}
	user.WaitResult(t, id, provision.StateDeleted, within)
}
