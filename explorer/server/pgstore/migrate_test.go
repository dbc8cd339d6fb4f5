package pgstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/pgstore"
	"github.com/edgeprov/provisiond/internal/pgtest"
)

func schemaVersions(t *testing.T, dsn string) []int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), "select version from schema_version order by version")
	if err != nil {
		t.Fatal(err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestMigrationsOnceAcrossReplicas starts several stores on a fresh
// database at once: the migrations are applied once, in order, and every
// store opens.
func TestMigrationsOnceAcrossReplicas(t *testing.T) {
	dsn := pgtest.Shared(t).NewDB(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := pgstore.Open(t.Context(), pgstore.Config{URL: dsn})
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("store %d: %v", i, err)
		}
	}
	vs := schemaVersions(t, dsn)
	if len(vs) != pgstore.SchemaVersion() {
		t.Fatalf("schema versions %v, want 1..%d once each", vs, pgstore.SchemaVersion())
	}
	for i, v := range vs {
		if v != i+1 {
			t.Fatalf("schema versions %v, want 1..%d once each", vs, pgstore.SchemaVersion())
		}
	}
}

// TestNewerSchemaRefused opens a database that a newer explorerd migrated:
// this one refuses it rather than writing to a schema it does not know.
func TestNewerSchemaRefused(t *testing.T) {
	dsn := pgtest.Shared(t).NewDB(t)
	s, err := pgstore.Open(t.Context(), pgstore.Config{URL: dsn})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), "insert into schema_version (version) values ($1)", pgstore.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	_, err = pgstore.Open(t.Context(), pgstore.Config{URL: dsn})
	if !errors.Is(err, server.ErrSchema) {
		t.Fatalf("opening a newer schema: %v, want ErrSchema", err)
	}
	t.Logf("refused with: %v", err)
}

func TestOpenRefusesBadURL(t *testing.T) {
	for _, url := range []string{"", "postgres://%zz"} {
		if _, err := pgstore.Open(t.Context(), pgstore.Config{URL: url}); err == nil {
			t.Fatalf("Open(%q) succeeded", url)
		}
	}
}
