package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// BenchmarkNodes lists nodes from a bbolt store of 5,000 nodes with
// stats: a first page of 500, and a filter no node passes (a scan of all).
func BenchmarkNodes(b *testing.B) {
	s, err := server.OpenBolt(b.TempDir(), true)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := b.Context()
	now := time.Now()
	for i := range 5000 {
		id := fmt.Sprintf("node-%05d", i)
		if _, err := s.RegisterNode(ctx, id, now); err != nil {
			b.Fatal(err)
		}
		if err := s.UpdateNode(ctx, id, func(r *server.NodeRecord) {
			r.Version = "v1.0.0"
			r.Stats = &provision.Stats{Used: provision.Units{CRU: uint64(i % 8), MRU: 4}, Updated: now,
				Capacity:  provision.Capacity{Total: provision.Units{CRU: 8, MRU: 32, SRU: 500}, Reserved: provision.Units{MRU: 3.2}},
				Workloads: map[provision.ReservationType]uint64{provision.ContainerReservation: 3, provision.VolumeReservation: 1}}
		}); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name string
		q    server.NodeQuery
		want int
	}{
		{"page-of-500", server.NodeQuery{Limit: 500}, 500},
		{"scan-5000-none-fit", server.NodeQuery{MinFree: provision.Units{CRU: 9}, Limit: 500}, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				got, err := s.Nodes(ctx, bc.q)
				if err != nil || len(got) != bc.want {
					b.Fatalf("%d nodes, %v; want %d", len(got), err, bc.want)
				}
			}
		})
	}
}
