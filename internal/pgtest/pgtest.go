// Package pgtest runs real PostgreSQL clusters for tests: Debian's
// postgresql package, a cluster made with initdb in a temporary directory
// as the postgres user, listening only on a unix socket in that directory
// (no TCP port), started and stopped by the test.
//
// A test package shares one cluster through Main and Shared, each test
// getting a fresh database of it (NewDB); a test that stops or restarts
// PostgreSQL takes a cluster of its own (New). Without the binaries, or
// without root (initdb and the server refuse to run as root, so the
// harness switches to the postgres user with runuser), tests skip with the
// reason; with $CI set they fail instead, as the other gates of
// internal/testutil do.
package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a running PostgreSQL cluster in a temporary directory.
type Cluster struct {
	bin  string // the directory of initdb, pg_ctl, postgres
	dir  string // holds data/, the socket and server.log
	uid  int
	gid  int
	mu   sync.Mutex
	up   bool
	dbs  atomic.Int64
	opts []string
}

// Binaries returns the directory of Debian's PostgreSQL server binaries
// (the newest of /usr/lib/postgresql/*/bin), or an error saying what to
// install. /usr/local/bin may hold other tools named pg_ctl: they are not
// used.
func Binaries() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	var found []string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			found = append(found, d)
		}
	}
	if len(found) == 0 {
		return "", fmt.Errorf("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql; `make deps` does)")
	}
	sort.Slice(found, func(i, j int) bool { return version(found[i]) < version(found[j]) })
	return found[len(found)-1], nil
}

func version(bin string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return n
}

// gate skips or, in CI, fails the test with why.
func gate(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal("CI is set but " + why)
	}
	t.Skip("skipping: " + why)
}

// New makes, starts and returns a cluster of the test's own; it is stopped
// and removed when the test ends. Use it for tests that stop or restart
// PostgreSQL; others share one (Shared).
func New(t testing.TB) *Cluster {
	t.Helper()
	c, err := start()
	if err != nil {
		if err == errAbsent || err == errNotRoot {
			gate(t, err.Error())
		}
		t.Fatal(err)
	}
	t.Cleanup(c.Remove)
	return c
}

var (
	errAbsent  = fmt.Errorf("PostgreSQL is not installed (apt-get install postgresql; `make deps` does)")
	errNotRoot = fmt.Errorf("needs root to run PostgreSQL as the postgres user; run the tests as root")
)

func start() (*Cluster, error) {
	bin, err := Binaries()
	if err != nil {
		return nil, errAbsent
	}
	if os.Geteuid() != 0 {
		return nil, errNotRoot
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: no postgres user (the postgresql package creates it): %w", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	// Not t.TempDir: its parents are private to root, and the socket path
	// must stay short (108 bytes at most).
	dir, err := os.MkdirTemp("", "prv-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, dir: dir, uid: uid, gid: gid}
	if err := c.init(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) init() error {
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return err
	}
	if err := os.Chown(c.dir, c.uid, c.gid); err != nil {
		return err
	}
	return c.run("initdb", "-D", c.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale", "C")
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// run runs one of the server binaries as the postgres user.
func (c *Cluster) run(name string, args ...string) error {
	args = append([]string{"-u", "postgres", "--", filepath.Join(c.bin, name)}, args...)
	cmd := exec.Command("runuser", args...)
	cmd.Dir = c.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
		return fmt.Errorf("pgtest: %s %v: %w\n%s\nserver.log:\n%s", name, args[3:], err, out.Bytes(), tail(log, 2000))
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Start starts the server and waits until it accepts connections. The
// cluster is for tests: fsync and synchronous commit are off.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up {
		return nil
	}
	opts := fmt.Sprintf("-k %s -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", c.dir)
	if err := c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.dir, "server.log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		return err
	}
	c.up = true
	return nil
}

// Stop stops the server: mode "fast" (clients are disconnected, a clean
// shutdown) or "immediate" (as a crash would; recovery at the next Start).
func (c *Cluster) Stop(mode string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.up {
		return nil
	}
	if err := c.run("pg_ctl", "-D", c.data(), "-w", "-t", "60", "-m", mode, "stop"); err != nil {
		return err
	}
	c.up = false
	return nil
}

// Remove stops the server and removes its directory.
func (c *Cluster) Remove() {
	c.Stop("immediate")
	os.RemoveAll(c.dir)
}

// DSN returns the connection string of database db over the cluster's
// unix socket.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres:///%s?host=%s&user=postgres&sslmode=disable", db, c.dir)
}

// NewDB creates a fresh, empty database and returns its DSN; it is not
// dropped at the end (the cluster goes away with its directory).
func (c *Cluster) NewDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), c.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatalf("pgtest: connecting: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "create database "+name); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	return c.DSN(name)
}

var shared struct {
	sync.Mutex
	c   *Cluster
	err error
}

// Shared returns the test package's shared cluster, started at its first
// use and stopped by Main after the last test.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.c == nil && shared.err == nil {
		shared.c, shared.err = start()
	}
	if shared.err != nil {
		if shared.err == errAbsent || shared.err == errNotRoot {
			gate(t, shared.err.Error())
		}
		t.Fatal(shared.err)
	}
	return shared.c
}

// Main runs the package's tests and then removes the shared cluster, if
// one was started. Call it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	shared.Lock()
	defer shared.Unlock()
	if shared.c != nil {
		shared.c.Remove()
	}
	return code
}
