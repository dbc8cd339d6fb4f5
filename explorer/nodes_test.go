package explorer_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/provision"
)

// TestNodesPageFitsAReply checks that a full page of nodes, each with the
// longest version, every workload type and figures of the most digits,
// stays under 1 MiB: what a client reads of a reply.
func TestNodesPageFitsAReply(t *testing.T) {
	at := time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.FixedZone("x", -11*3600))
	big := math.Nextafter(1e15, 0) / 3
	fig := explorer.UnitFigures{Total: big, System: big, Reserved: big, Free: big}
	n := explorer.NodeSummary{
		NodeID: strings.Repeat("z", 44), Status: explorer.NodeUnreported, AsOf: at, LastSeen: at, Registered: at,
		Version: strings.Repeat("v", explorer.MaxVersionLength),
		Units:   explorer.NodeUnitFigures{CRU: fig, MRU: fig, SRU: fig, HRU: fig},
		Workloads: map[provision.ReservationType]uint64{
			provision.ContainerReservation: math.MaxUint64, provision.VolumeReservation: math.MaxUint64, provision.NetworkReservation: math.MaxUint64},
		StatsUpdated: &at,
	}
	reply := explorer.NodesReply{AsOf: at, DownAfterSeconds: big, Next: n.NodeID}
	for range explorer.NodesPageMax {
		reply.Nodes = append(reply.Nodes, n)
	}
	raw, err := json.Marshal(reply)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) >= 1<<20 {
		t.Fatalf("a full page of nodes is %d bytes, more than 1 MiB", len(raw))
	}
	t.Logf("a full page of %d nodes at most: %d bytes", explorer.NodesPageMax, len(raw))
}

func TestNodeFilterQuery(t *testing.T) {
	tests := []struct {
		name string
		f    explorer.NodeFilter
		want string
	}{
		{"empty", explorer.NodeFilter{}, ""},
		{"all", explorer.NodeFilter{MinFree: provision.Units{CRU: 2, MRU: 0.5, SRU: 10, HRU: 1e3}, Status: "up", After: "A b", Limit: 7},
			"after=A+b&free_cru=2&free_hru=1000&free_mru=0.5&free_sru=10&limit=7&status=up"},
	}
	for _, tt := range tests {
		if got := tt.f.Query().Encode(); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
