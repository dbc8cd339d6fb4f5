package pgtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// A cluster whose test process died is stopped and removed by the next
// start; one whose owner lives is left alone.
func TestReapsOrphans(t *testing.T) {
	live, orphan := New(t), New(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orphan.dir, ownerFile), []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	dsn := orphan.NewDB(t)
	reapOrphans(orphan.bin)
	if _, err := os.Stat(orphan.dir); !os.IsNotExist(err) {
		t.Fatalf("the orphan's directory is still there: %v", err)
	}
	if _, err := pgx.Connect(t.Context(), dsn); err == nil {
		t.Fatal("the orphan cluster still serves")
	}
	if n := query(t, live.NewDB(t)); n != 42 {
		t.Fatalf("the live cluster answered %d", n)
	}
}
