package pgstore_test

import (
	"os"
	"testing"

	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/pgstore"
	"github.com/edgeprov/provisiond/explorer/server/storetest"
	"github.com/edgeprov/provisiond/internal/pgtest"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(replicaEnv); spec != "" {
		os.Exit(serveReplica(spec)) // a replica process of BenchmarkFleet
	}
	os.Exit(pgtest.Main(m))
}

// open returns a store on a fresh database of the shared cluster.
func open(t *testing.T) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(t.Context(), pgstore.Config{URL: pgtest.Shared(t).NewDB(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) server.Store { return open(t) })
}
