package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func query(t *testing.T, dsn string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), "select 41 + 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSharedClusterServesFreshDatabases(t *testing.T) {
	c := Shared(t)
	a, b := c.NewDB(t), c.NewDB(t)
	if a == b {
		t.Fatalf("two databases share the DSN %s", a)
	}
	if n := query(t, a); n != 42 {
		t.Fatalf("select gave %d", n)
	}
	if Shared(t) != c {
		t.Fatal("a second Shared started another cluster")
	}
}

func TestStopAndStart(t *testing.T) {
	c := New(t)
	dsn := c.NewDB(t)
	if err := c.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(t.Context(), dsn); err == nil {
		t.Fatal("connected to a stopped cluster")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if n := query(t, dsn); n != 42 {
		t.Fatalf("select gave %d after a restart", n)
	}
}
