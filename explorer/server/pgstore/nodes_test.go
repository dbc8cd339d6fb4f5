package pgstore_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/pgstore"
	"github.com/edgeprov/provisiond/internal/pgtest"
	"github.com/edgeprov/provisiond/provision"
)

// TestMigrationBackfillsNodeColumns makes a database of schema 1 holding
// nodes, opens it (which applies 0002_node_list.sql) and checks that the
// node list filters them by the free units and last seen the migration
// computed in SQL, as server.NodeRecord.Units computes them in Go.
func TestMigrationBackfillsNodeColumns(t *testing.T) {
	ctx := t.Context()
	url := pgtest.Shared(t).NewDB(t)
	init, err := os.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, string(init)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `create table schema_version (version integer primary key, applied timestamptz not null default now());
		insert into schema_version (version) values (1)`); err != nil {
		t.Fatal(err)
	}
	seen := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	u := func(cru uint64, mru, sru, hru float64) provision.Units {
		return provision.Units{CRU: cru, MRU: mru, SRU: sru, HRU: hru}
	}
	recs := []*server.NodeRecord{
		{Stats: &provision.Stats{Used: u(2, 8.5, 100, 0), Capacity: provision.Capacity{Total: u(8, 32, 500, 0), Reserved: u(0, 4, 0, 0)}},
			Capacity: &provision.Capacity{Total: u(1, 1, 1, 1)}},
		{Capacity: &provision.Capacity{Total: u(4, 16, 100, 1000), Reserved: u(1, 2, 0, 0)}},
		{},
		{Stats: &provision.Stats{Used: u(4, 8, 0, 0), Capacity: provision.Capacity{Total: u(2, 4, 10, 0)}}},
	}
	for i, rec := range recs {
		rec.NodeID = explorertest.NodeID(explorertest.NewKey(t))
		rec.Registered, rec.LastSeen = seen, seen.Add(time.Duration(i)*time.Minute)
		raw, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "insert into nodes (id, record) values ($1, $2)", rec.NodeID, raw); err != nil {
			t.Fatal(err)
		}
	}
	s, err := pgstore.Open(ctx, pgstore.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, rec := range recs {
		want := rec.Units().Free
		// The node passes a filter of exactly its free units and no
		// filter a little above any one of them.
		got, err := s.Nodes(ctx, server.NodeQuery{MinFree: want, SeenSince: rec.LastSeen, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if !contains(got, rec.NodeID) {
			t.Fatalf("node %d (free %+v, seen %s) is not listed with its own free units and last seen", i, want, rec.LastSeen)
		}
		for _, more := range []provision.Units{u(1, 0, 0, 0), u(0, 0.25, 0, 0), u(0, 0, 0.25, 0), u(0, 0, 0, 0.25)} {
			got, err := s.Nodes(ctx, server.NodeQuery{MinFree: want.Add(more), Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if contains(got, rec.NodeID) {
				t.Fatalf("node %d (free %+v) is listed for free units %+v", i, want, want.Add(more))
			}
		}
		got, err = s.Nodes(ctx, server.NodeQuery{SeenSince: rec.LastSeen.Add(time.Microsecond), Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if contains(got, rec.NodeID) {
			t.Fatalf("node %d (seen %s) is listed as seen later", i, rec.LastSeen)
		}
	}
}

func contains(recs []*server.NodeRecord, id string) bool {
	for _, r := range recs {
		if r.NodeID == id {
			return true
		}
	}
	return false
}
