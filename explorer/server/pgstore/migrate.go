package pgstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeprov/provisiond/explorer/server"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one ordered schema step: migrations/NNNN_name.sql brings
// the schema to version NNNN.
type migration struct {
	version int
	name    string
	sql     string
}

// Advisory lock keys of the explorer (pg_advisory_xact_lock): one
// migrating process at a time, one pruning replica at a time, one
// replica at a time deleting expired reservations.
const (
	lockMigrate int64 = 0x70727600_00000001
	lockPrune   int64 = 0x70727600_00000002
	lockExpire  int64 = 0x70727600_00000003
)

// lockQuota is the first key of the two-key advisory lock that serialises
// one user's submissions (the second is hashtext of the user ID).
const lockQuota int32 = 0x70727603

// migrations returns the embedded migrations in version order; versions
// must be 1, 2, 3… without holes.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: the name must start with its version, as 0001_name.sql", base)
		}
		raw, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(raw)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d", m.name, m.version, i+1)
		}
	}
	return ms, nil
}

// SchemaVersion is the schema version this explorerd knows: its newest
// migration.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		panic(fmt.Sprintf("pgstore: embedded migrations: %v", err)) // a build defect
	}
	return ms[len(ms)-1].version
}

// migrate brings the database to SchemaVersion, one transaction per
// migration, under an advisory lock so that replicas starting together
// apply each migration once. A database with a newer schema is refused
// (server.ErrSchema): an older explorerd must not write to it.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Release()
	for {
		done, err := migrateOne(ctx, conn.Conn(), ms)
		if err != nil || done {
			return err
		}
	}
}

// migrateOne applies the next migration, if any, and reports whether the
// schema is up to date.
func migrateOne(ctx context.Context, conn *pgx.Conn, ms []migration) (done bool, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock($1)", lockMigrate); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `create table if not exists schema_version (
			version integer primary key,
			applied timestamptz not null default now()
		)`); err != nil {
			return err
		}
		var cur int
		if err := tx.QueryRow(ctx, "select coalesce(max(version), 0) from schema_version").Scan(&cur); err != nil {
			return err
		}
		latest := ms[len(ms)-1].version
		if cur > latest {
			return fmt.Errorf("%w: the database has schema version %d, this explorerd knows up to %d (upgrade explorerd)", server.ErrSchema, cur, latest)
		}
		if cur == latest {
			done = true
			return nil
		}
		m := ms[cur]
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("applying migration %s: %w", m.name, err)
		}
		_, err := tx.Exec(ctx, "insert into schema_version (version) values ($1)", m.version)
		return err
	})
	return done, err
}
