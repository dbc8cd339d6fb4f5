package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// channel is the LISTEN/NOTIFY channel of the explorer's topics.
const channel = "provisiond_explorer"

// Config configures a Store.
type Config struct {
	// URL is the database, a postgres:// URL or a key=value DSN (required).
	URL string
	// Logger receives the store's logs (default: none).
	Logger zerolog.Logger
	// MaxConns bounds the connection pool (default 16); the listener uses
	// one more connection of its own.
	MaxConns int32
}

// Store is the explorer's database on PostgreSQL. It implements
// server.Store, server.Notifier and server.Pruner.
type Store struct {
	pool   *pgxpool.Pool
	listen *pgx.ConnConfig
	log    zerolog.Logger

	mu      sync.Mutex
	pending map[string]struct{} // topics to NOTIFY
	kick    chan struct{}
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

var (
	_ server.Store    = (*Store)(nil)
	_ server.Notifier = (*Store)(nil)
	_ server.Pruner   = (*Store)(nil)
)

// Open connects to cfg.URL, applies the migrations the database lacks and
// returns the store. It fails with server.ErrSchema when the database has
// a newer schema than this explorerd knows.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("%w: no database URL", server.ErrBadRequest)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parsing the database URL: %w", err)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 16
	}
	pcfg.MaxConns = cfg.MaxConns
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "explorerd"
	lcfg := pcfg.ConnConfig.Copy()
	lcfg.RuntimeParams["application_name"] = "explorerd-listener"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrating the database: %w", err)
	}
	nctx, stop := context.WithCancel(context.Background())
	s := &Store{
		pool:    pool,
		listen:  lcfg,
		log:     cfg.Logger.With().Str("component", "pgstore").Logger(),
		pending: map[string]struct{}{},
		kick:    make(chan struct{}, 1),
		stop:    stop,
	}
	s.wg.Go(func() { s.notifyLoop(nctx) })
	return s, nil
}

// Close sends the notifications still queued, then closes the pool.
func (s *Store) Close() error {
	s.stop()
	s.wg.Wait()
	s.pool.Close()
	return nil
}

// tx runs fn in a transaction.
func (s *Store) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

func isUnique(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == constraint
}

// RegisterNode records a node; registering again changes nothing and
// reports false.
func (s *Store) RegisterNode(ctx context.Context, id string, now time.Time) (bool, error) {
	rec, err := json.Marshal(&server.NodeRecord{NodeID: id, Registered: now.UTC(), LastSeen: now.UTC()})
	if err != nil {
		return false, err
	}
	tag, err := s.pool.Exec(ctx, "insert into nodes (id, record, last_seen) values ($1, $2, $3) on conflict (id) do nothing", id, rec, now.UTC())
	if err != nil {
		return false, fmt.Errorf("registering node %s: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// Node returns a node's record and its last event sequence number.
func (s *Store) Node(ctx context.Context, id string) (*server.NodeRecord, uint64, error) {
	var raw []byte
	var seq int64
	var seen time.Time
	err := s.pool.QueryRow(ctx, "select record, last_seq, last_seen from nodes where id = $1", id).Scan(&raw, &seq, &seen)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("%w: %s", server.ErrUnknownNode, id)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading node %s: %w", id, err)
	}
	var rec server.NodeRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, 0, fmt.Errorf("decoding node %s: %w", id, err)
	}
	rec.LastSeen = later(rec.LastSeen, seen)
	return &rec, uint64(seq), nil
}

// UpdateNode applies fn to a registered node's record.
func (s *Store) UpdateNode(ctx context.Context, id string, fn func(*server.NodeRecord)) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var raw []byte
		var seen time.Time
		err := tx.QueryRow(ctx, "select record, last_seen from nodes where id = $1 for update", id).Scan(&raw, &seen)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s", server.ErrUnknownNode, id)
		}
		if err != nil {
			return fmt.Errorf("reading node %s: %w", id, err)
		}
		var rec server.NodeRecord
		if err := json.Unmarshal(raw, &rec); err != nil {
			return fmt.Errorf("decoding node %s: %w", id, err)
		}
		rec.LastSeen = later(rec.LastSeen, seen)
		fn(&rec)
		if raw, err = json.Marshal(&rec); err != nil {
			return err
		}
		free := rec.Units().Free
		if _, err := tx.Exec(ctx, `update nodes set record = $2, last_seen = greatest(last_seen, $3),
			free_cru = $4, free_mru = $5, free_sru = $6, free_hru = $7 where id = $1`,
			id, raw, rec.LastSeen.UTC(), float64(free.CRU), free.MRU, free.SRU, free.HRU); err != nil {
			return fmt.Errorf("updating node %s: %w", id, err)
		}
		return nil
	})
}

// nextSeq takes node's next event sequence number under its row lock.
func nextSeq(ctx context.Context, tx pgx.Tx, node string) (uint64, error) {
	var seq int64
	err := tx.QueryRow(ctx, "update nodes set last_seq = last_seq + 1 where id = $1 returning last_seq", node).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: %s", server.ErrUnknownNode, node)
	}
	return uint64(seq), err
}

// publish appends an event carrying raw to node's stream inside tx and
// returns its sequence number.
func publish(ctx context.Context, tx pgx.Tx, node string, raw []byte) (uint64, error) {
	seq, err := nextSeq(ctx, tx, node)
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, "insert into events (node_id, seq, reservation) values ($1, $2, $3)", node, int64(seq), raw); err != nil {
		return 0, fmt.Errorf("inserting event %d of %s: %w", seq, node, err)
	}
	return seq, nil
}

func newID() (string, error) {
	var buf [8]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", fmt.Errorf("drawing reservation id: %w", err)
	}
	return hex.EncodeToString(buf[:]), nil
}

// CreateReservation assigns r an ID, stores it and publishes it to its
// node, in one transaction.
func (s *Store) CreateReservation(ctx context.Context, r *provision.Reservation) (uint64, error) {
	return s.CreateReservationWithin(ctx, r, time.Time{}, server.Quota{})
}

// CreateReservationWithin is CreateReservation under the quota q of r's
// user at now. A transaction-scoped advisory lock on the user serialises
// the count (and, when q limits units, the sum of the units of the user's
// active reservations, priced in Go by server.Units from their bodies) and
// the insert of one user's submissions across every replica; it is taken
// before the node's row lock, always in that order.
func (s *Store) CreateReservationWithin(ctx context.Context, r *provision.Reservation, now time.Time, q server.Quota) (uint64, error) {
	digest := r.Digest()
	var seq uint64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if q.MaxActive > 0 || q.PricesUnits() {
			if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock($1, hashtext($2))", lockQuota, r.UserID); err != nil {
				return fmt.Errorf("locking the quota of %s: %w", r.UserID, err)
			}
			n, used, err := activeUse(ctx, tx, r.UserID, now, q)
			if err != nil {
				return err
			}
			if err := q.Check(r.UserID, n, used, r); err != nil {
				return err
			}
		}
		// The node's row lock next: it orders the node's events and
		// serialises two submissions of one digest (the digest covers
		// the node).
		var err error
		if seq, err = nextSeq(ctx, tx, r.NodeID); err != nil {
			return err
		}
		if err := digestFree(ctx, tx, digest); err != nil {
			return err
		}
		r.Result, r.Delivered = nil, nil
		var raw []byte
		for {
			if r.ID, err = newID(); err != nil {
				return err
			}
			if raw, err = json.Marshal(r); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `insert into reservations (id, node_id, user_id, digest, created, expires, version, body, seq)
				values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict (id) do nothing`,
				r.ID, r.NodeID, r.UserID, digest, r.Created, r.Expires(), int64(r.Version), raw, int64(seq))
			if isUnique(err, "reservations_digest_key") {
				return fmt.Errorf("%w: another reservation has the digest %s", server.ErrDuplicate, digest)
			}
			if err != nil {
				return fmt.Errorf("inserting reservation: %w", err)
			}
			if tag.RowsAffected() == 1 {
				break
			}
		}
		_, err = tx.Exec(ctx, "insert into events (node_id, seq, reservation) values ($1, $2, $3)", r.NodeID, int64(seq), raw)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("creating reservation: %w", err)
	}
	s.notify(server.NodeTopic(r.NodeID), server.UserTopic(r.UserID))
	return seq, nil
}

// activeUse counts user's reservations that are not marked for deletion
// and expire at now or later and, when q limits units, sums their units.
// Without a units limit the count stops at q.MaxActive; with one every
// active reservation's body is read and priced (at most MaxActive of them
// when that limit is set).
func activeUse(ctx context.Context, tx pgx.Tx, user string, now time.Time, q server.Quota) (int, provision.Units, error) {
	if !q.PricesUnits() {
		var n int
		err := tx.QueryRow(ctx, `select count(*) from (select 1 from reservations
			where user_id = $1 and not to_delete and expires >= $2 limit $3) a`, user, now, q.MaxActive).Scan(&n)
		if err != nil {
			return 0, provision.Units{}, fmt.Errorf("counting the reservations of %s: %w", user, err)
		}
		return n, provision.Units{}, nil
	}
	rows, err := tx.Query(ctx, `select body from reservations
		where user_id = $1 and not to_delete and expires >= $2`, user, now)
	if err != nil {
		return 0, provision.Units{}, fmt.Errorf("pricing the reservations of %s: %w", user, err)
	}
	defer rows.Close()
	n := 0
	var used provision.Units
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return 0, provision.Units{}, fmt.Errorf("pricing the reservations of %s: %w", user, err)
		}
		var r provision.Reservation
		if err := json.Unmarshal(body, &r); err != nil {
			return 0, provision.Units{}, fmt.Errorf("pricing the reservations of %s: decoding: %w", user, err)
		}
		n++
		used = used.Add(server.Units(&r))
	}
	if err := rows.Err(); err != nil {
		return 0, provision.Units{}, fmt.Errorf("pricing the reservations of %s: %w", user, err)
	}
	return n, used, nil
}

// decodeReservation decodes a stored reservation, its result and when it
// was delivered (nil: not yet).
func decodeReservation(body, result []byte, delivered *time.Time) (*provision.Reservation, error) {
	var r provision.Reservation
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decoding reservation: %w", err)
	}
	r.Result, r.Delivered = nil, nil
	if delivered != nil {
		t := delivered.UTC()
		r.Delivered = &t
	}
	if result != nil {
		var res provision.Result
		if err := json.Unmarshal(result, &res); err != nil {
			return nil, fmt.Errorf("decoding the result of %s: %w", r.ID, err)
		}
		r.Result = &res
	}
	return &r, nil
}

// Reservation returns a reservation with its latest result.
func (s *Store) Reservation(ctx context.Context, id string) (*provision.Reservation, error) {
	var body, result []byte
	var delivered *time.Time
	err := s.pool.QueryRow(ctx, "select body, result, delivered_at from reservations where id = $1", id).Scan(&body, &result, &delivered)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: reservation %s", server.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("reading reservation %s: %w", id, err)
	}
	return decodeReservation(body, result, delivered)
}

// ReservationsOf returns a user's reservations with their results, oldest first.
func (s *Store) ReservationsOf(ctx context.Context, user string) ([]*provision.Reservation, error) {
	rows, err := s.pool.Query(ctx, "select body, result, delivered_at from reservations where user_id = $1 order by created, id", user)
	if err != nil {
		return nil, fmt.Errorf("listing reservations of %s: %w", user, err)
	}
	var list []*provision.Reservation
	var body, result []byte
	var delivered *time.Time
	_, err = pgx.ForEachRow(rows, []any{&body, &result, &delivered}, func() error {
		r, err := decodeReservation(body, result, delivered)
		if err != nil {
			return err
		}
		list = append(list, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing reservations of %s: %w", user, err)
	}
	server.SortReservations(list) // nanoseconds: PostgreSQL keeps microseconds
	return list, nil
}

// ReservationsPage returns one page of a user's reservations, by created
// (PostgreSQL keeps microseconds), then ID, read with the user index.
func (s *Store) ReservationsPage(ctx context.Context, user string, p server.Page) ([]*provision.Reservation, server.Cursor, error) {
	limit := max(p.Limit, 1)
	after := time.UnixMicro(p.After.Micros)
	if p.After.IsZero() {
		after = time.Time{}
	}
	// One row more than the page: it says whether a next page exists.
	rows, err := s.pool.Query(ctx, `select body, result, delivered_at from reservations
		where user_id = $1 and (created, id) > ($2, $3) order by created, id limit $4`,
		user, after, p.After.ID, limit+1)
	if err != nil {
		return nil, server.Cursor{}, fmt.Errorf("listing reservations of %s: %w", user, err)
	}
	defer rows.Close()
	var list []*provision.Reservation
	size, more := 0, false
	for rows.Next() {
		var body, result []byte
		var delivered *time.Time
		if err := rows.Scan(&body, &result, &delivered); err != nil {
			return nil, server.Cursor{}, fmt.Errorf("listing reservations of %s: %w", user, err)
		}
		size += len(body) + len(result)
		if p.Full(len(list), size) {
			more = true
			break
		}
		r, err := decodeReservation(body, result, delivered)
		if err != nil {
			return nil, server.Cursor{}, err
		}
		list = append(list, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, server.Cursor{}, fmt.Errorf("listing reservations of %s: %w", user, err)
	}
	if !more {
		return list, server.Cursor{}, nil
	}
	return list, server.CursorOf(list[len(list)-1]), nil
}

// MarkDelete sets the delete signature of reservation id after check
// accepted it, and publishes the updated reservation to its node. A repeat
// of the same signed delete changes nothing and publishes nothing (seq 0).
func (s *Store) MarkDelete(ctx context.Context, id string, check func(*provision.Reservation) error) (*provision.Reservation, uint64, error) {
	var r *provision.Reservation
	var seq uint64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var body, result []byte
		var delivered *time.Time
		err := tx.QueryRow(ctx, "select body, result, delivered_at from reservations where id = $1 for update", id).Scan(&body, &result, &delivered)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: reservation %s", server.ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		if r, err = decodeReservation(body, result, delivered); err != nil {
			return err
		}
		before := *r
		if err := check(r); err != nil {
			return err
		}
		if before.ToDelete && before.DeleteSignature == r.DeleteSignature {
			return nil
		}
		res, delivered := r.Result, r.Delivered
		r.Result, r.Delivered = nil, nil
		raw, err := json.Marshal(r)
		r.Result, r.Delivered = res, delivered
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "update reservations set body = $2, to_delete = $3 where id = $1", id, raw, r.ToDelete); err != nil {
			return err
		}
		seq, err = publish(ctx, tx, r.NodeID, raw)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("deleting reservation %s: %w", id, err)
	}
	if seq > 0 {
		s.notify(server.NodeTopic(r.NodeID), server.ReservationTopic(id), server.UserTopic(r.UserID))
	}
	return r, seq, nil
}

// digestFree fails with server.ErrDuplicate when a reservation, current
// or replaced version, holds digest.
func digestFree(ctx context.Context, tx pgx.Tx, digest string) error {
	var other string
	err := tx.QueryRow(ctx, `select id from reservations where digest = $1
		union all select id from superseded_digests where digest = $1 limit 1`, digest).Scan(&other)
	if err == nil {
		return fmt.Errorf("%w: reservation %s has the same digest %s", server.ErrDuplicate, other, digest)
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	return nil
}

// UpdateReservation replaces reservation id by next, its next version,
// once check accepted the stored version: see server.Store. The node's row
// lock (taken by the publish) serialises it with creations of the same
// digest, as in CreateReservationWithin.
func (s *Store) UpdateReservation(ctx context.Context, id string, next *provision.Reservation, check func(*provision.Reservation) error) (uint64, error) {
	return s.UpdateReservationWithin(ctx, id, next, time.Time{}, server.Quota{}, check)
}

// UpdateReservationWithin is UpdateReservation under the quota q of the
// user at now. When q limits units, the advisory lock on the user (next's,
// which check requires to be the stored version's) is taken first, as
// CreateReservationWithin takes it, so the sum and the write are one step
// with the user's other submissions; then the row lock, then the node's.
func (s *Store) UpdateReservationWithin(ctx context.Context, id string, next *provision.Reservation, now time.Time, q server.Quota, check func(*provision.Reservation) error) (uint64, error) {
	digest := next.Digest()
	var seq uint64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if q.PricesUnits() {
			if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock($1, hashtext($2))", lockQuota, next.UserID); err != nil {
				return fmt.Errorf("locking the quota of %s: %w", next.UserID, err)
			}
		}
		var body, result []byte
		var delivered *time.Time
		var curDigest string
		err := tx.QueryRow(ctx, "select body, result, delivered_at, digest from reservations where id = $1 for update", id).Scan(&body, &result, &delivered, &curDigest)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: reservation %s", server.ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		cur, err := decodeReservation(body, result, delivered)
		if err != nil {
			return err
		}
		if err := check(cur); err != nil {
			return err
		}
		if q.PricesUnits() {
			if cur.UserID != next.UserID {
				return fmt.Errorf("%w: reservation %s is %s's, the update %s's", server.ErrForbidden, id, cur.UserID, next.UserID)
			}
			_, used, err := activeUse(ctx, tx, cur.UserID, now, q)
			if err != nil {
				return err
			}
			if err := q.CheckUpdate(cur.UserID, used, now, cur, next); err != nil {
				return err
			}
		}
		if seq, err = nextSeq(ctx, tx, cur.NodeID); err != nil {
			return err
		}
		if err := digestFree(ctx, tx, digest); err != nil {
			return err
		}
		n := *next
		n.ID, n.Result, n.Delivered = id, nil, nil
		raw, err := json.Marshal(&n)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "insert into superseded_digests (digest, id) values ($1, $2)", curDigest, id); err != nil {
			return fmt.Errorf("keeping the replaced digest: %w", err)
		}
		_, err = tx.Exec(ctx, `update reservations set digest = $2, expires = $3, version = $4, body = $5, seq = $6,
			result = null, delivered_at = null where id = $1`, id, digest, n.Expires(), int64(n.Version), raw, int64(seq))
		if isUnique(err, "reservations_digest_key") {
			return fmt.Errorf("%w: another reservation has the digest %s", server.ErrDuplicate, digest)
		}
		if err != nil {
			return fmt.Errorf("updating reservation: %w", err)
		}
		_, err = tx.Exec(ctx, "insert into events (node_id, seq, reservation) values ($1, $2, $3)", n.NodeID, int64(seq), raw)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("updating reservation %s: %w", id, err)
	}
	s.notify(server.NodeTopic(next.NodeID), server.ReservationTopic(id), server.UserTopic(next.UserID))
	return seq, nil
}

// PutResults stores a batch of a node's results in one transaction. The
// rows are locked in ID order, so two batches never deadlock.
func (s *Store) PutResults(ctx context.Context, rs []*provision.Result, check func(i int, r *provision.Reservation) error) (stored []bool, errs []error, err error) {
	var ids []string
	for _, res := range rs {
		if res != nil {
			ids = append(ids, res.ID)
		}
	}
	users := map[string]string{} // reservation ID → owner, of the stored results
	err = s.tx(ctx, func(tx pgx.Tx) error {
		stored, errs = make([]bool, len(rs)), make([]error, len(rs))
		clear(users)
		if len(ids) == 0 {
			return nil
		}
		rows, err := tx.Query(ctx, "select body, result, delivered_at from reservations where id = any($1) order by id for update", ids)
		if err != nil {
			return err
		}
		byID := map[string]*provision.Reservation{}
		var body, result []byte
		var delivered *time.Time
		if _, err := pgx.ForEachRow(rows, []any{&body, &result, &delivered}, func() error {
			r, err := decodeReservation(body, result, delivered)
			if err == nil {
				byID[r.ID] = r
			}
			return err
		}); err != nil {
			return err
		}
		for i, res := range rs {
			if res == nil {
				continue
			}
			r := byID[res.ID]
			if r == nil {
				errs[i] = fmt.Errorf("storing result of %s: %w: reservation %s", res.ID, server.ErrNotFound, res.ID)
				continue
			}
			if err := check(i, r); err != nil {
				errs[i] = fmt.Errorf("storing result of %s: %w", res.ID, err)
				continue
			}
			if !server.Supersedes(r.Result, res) {
				continue
			}
			raw, err := json.Marshal(res)
			if err != nil {
				return fmt.Errorf("storing result of %s: %w", res.ID, err)
			}
			if _, err := tx.Exec(ctx, "update reservations set result = $2 where id = $1", res.ID, raw); err != nil {
				return fmt.Errorf("storing result of %s: %w", res.ID, err)
			}
			r.Result = res
			stored[i] = true
			users[res.ID] = r.UserID
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("storing %d results: %w", len(rs), err)
	}
	var topics []string
	for i, res := range rs {
		if stored[i] {
			topics = append(topics, server.ReservationTopic(res.ID), server.UserTopic(users[res.ID]))
		}
	}
	s.notify(topics...)
	return stored, errs, nil
}

// Events returns up to limit events of node after from, and the cursor to
// ask from next; a cursor below the node's low-water mark fails with
// server.ErrGone. One statement reads the mark and the events, so a
// concurrent Prune cannot open a hole between them.
func (s *Store) Events(ctx context.Context, node string, from uint64, limit int) ([]explorer.WireEvent, uint64, error) {
	rows, err := s.pool.Query(ctx, `select n.low_seq, e.seq, e.reservation from nodes n
		left join lateral (select seq, reservation from events
			where node_id = n.id and seq > $2 order by seq limit $3) e on true
		where n.id = $1 order by e.seq`, node, int64(from), limit)
	if err != nil {
		return nil, from, fmt.Errorf("reading events of %s: %w", node, err)
	}
	var evs []explorer.WireEvent
	next, found, low := from, false, int64(0)
	var seq *int64
	var raw []byte
	_, err = pgx.ForEachRow(rows, []any{&low, &seq, &raw}, func() error {
		found = true
		if seq != nil {
			evs = append(evs, explorer.WireEvent{Seq: uint64(*seq), Reservation: raw})
			next = uint64(*seq)
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, from, fmt.Errorf("reading events of %s: %w", node, err)
	case !found:
		return nil, from, fmt.Errorf("reading events of %s: %w: %s", node, server.ErrUnknownNode, node)
	case from < uint64(low):
		return nil, from, fmt.Errorf("%w: events up to %d of node %s were pruned; reconcile from GET /api/v1/nodes/%s/state and poll from its seq", server.ErrGone, low, node, node)
	}
	return evs, next, nil
}

// State returns node's active reservations and the sequence number they
// are as of, read in one repeatable-read transaction.
func (s *Store) State(ctx context.Context, node string, now time.Time) (*explorer.NodeState, error) {
	st := &explorer.NodeState{NodeID: node, Reservations: []explorer.StateEntry{}}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var seq, low int64
		err := tx.QueryRow(ctx, "select last_seq, low_seq from nodes where id = $1", node).Scan(&seq, &low)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s", server.ErrUnknownNode, node)
		}
		if err != nil {
			return err
		}
		st.Seq, st.Low = uint64(seq), uint64(low)
		rows, err := tx.Query(ctx, `select id, digest, version from reservations
			where node_id = $1 and not to_delete and expires >= $2 order by id`, node, now)
		if err != nil {
			return err
		}
		var e explorer.StateEntry
		var version int64
		_, err = pgx.ForEachRow(rows, []any{&e.ID, &e.Digest, &version}, func() error {
			e.Version = uint32(version)
			st.Reservations = append(st.Reservations, e)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the state of %s: %w", node, err)
	}
	return st, nil
}

// NodeReservations returns up to limit of node's reservations, the last
// submitted first (by the seq of the event that created them; those of
// schema 1, seq 0, last, newest first).
func (s *Store) NodeReservations(ctx context.Context, node string, limit int) ([]*provision.Reservation, error) {
	rows, err := s.pool.Query(ctx, `select body, result, delivered_at from reservations
		where node_id = $1 order by seq desc, created desc, id desc limit $2`, node, limit)
	if err != nil {
		return nil, fmt.Errorf("listing the reservations of %s: %w", node, err)
	}
	var out []*provision.Reservation
	var body, result []byte
	var delivered *time.Time
	if _, err := pgx.ForEachRow(rows, []any{&body, &result, &delivered}, func() error {
		r, err := decodeReservation(body, result, delivered)
		if err == nil {
			out = append(out, r)
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("listing the reservations of %s: %w", node, err)
	}
	return out, nil
}

// MarkDelivered marks delivered, at now, node's reservations created by an
// event at or below upTo, and notifies their watchers.
func (s *Store) MarkDelivered(ctx context.Context, node string, upTo uint64, now time.Time) ([]server.Delivery, error) {
	rows, err := s.pool.Query(ctx, `update reservations set delivered_at = $3
		where node_id = $1 and seq <= $2 and delivered_at is null returning id, user_id`, node, int64(upTo), now.UTC())
	if err != nil {
		return nil, fmt.Errorf("marking the events of %s delivered up to %d: %w", node, upTo, err)
	}
	var out []server.Delivery
	var d server.Delivery
	if _, err := pgx.ForEachRow(rows, []any{&d.ID, &d.UserID}, func() error {
		out = append(out, d)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("marking the events of %s delivered up to %d: %w", node, upTo, err)
	}
	var topics []string
	for _, d := range out {
		topics = append(topics, server.ReservationTopic(d.ID), server.UserTopic(d.UserID))
	}
	s.notify(topics...)
	return out, nil
}

// InjectEvent publishes raw to node without any check.
func (s *Store) InjectEvent(ctx context.Context, node string, raw []byte) (uint64, error) {
	var seq uint64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		seq, err = publish(ctx, tx, node, raw)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("injecting event for %s: %w", node, err)
	}
	s.notify(server.NodeTopic(node))
	return seq, nil
}

// Prune drops, for each node, the prefix of its events up to the last one
// published before cutoff, and raises its low-water mark to that event. It
// runs on one replica at a time: when another holds the prune lock, it
// returns 0 at once.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, "select pg_try_advisory_xact_lock($1)", lockPrune).Scan(&locked); err != nil || !locked {
			return err
		}
		return tx.QueryRow(ctx, `with m as (
				select node_id, max(seq) as seq from events where created < $1 group by node_id
			), d as (
				delete from events e using m where e.node_id = m.node_id and e.seq <= m.seq returning 1
			), u as (
				update nodes n set low_seq = m.seq from m where n.id = m.node_id and n.low_seq < m.seq returning 1
			)
			select (select count(*) from d) + 0 * (select count(*) from u)`, cutoff).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("pruning events: %w", err)
	}
	return n, nil
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Nodes returns up to q.Limit nodes that pass q's filters, by ID (byte
// order: collation "C") after q.After. The free units and last seen are
// columns, so the filters run in the database.
func (s *Store) Nodes(ctx context.Context, q server.NodeQuery) ([]*server.NodeRecord, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	var since *time.Time
	if !q.SeenSince.IsZero() {
		t := q.SeenSince.UTC()
		since = &t
	}
	rows, err := s.pool.Query(ctx, `select record, last_seen from nodes
		where id > $1 collate "C"
		and free_cru >= $2 and free_mru >= $3 and free_sru >= $4 and free_hru >= $5
		and ($6::timestamptz is null or last_seen >= $6)
		order by id collate "C" limit $7`,
		q.After, float64(q.MinFree.CRU), q.MinFree.MRU, q.MinFree.SRU, q.MinFree.HRU, since, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	var list []*server.NodeRecord
	var raw []byte
	var seen time.Time
	_, err = pgx.ForEachRow(rows, []any{&raw, &seen}, func() error {
		var rec server.NodeRecord
		if err := json.Unmarshal(raw, &rec); err != nil {
			return fmt.Errorf("decoding a node: %w", err)
		}
		rec.LastSeen = later(rec.LastSeen, seen)
		list = append(list, &rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	return list, nil
}

// TouchNodes raises the last_seen column of each registered node in seen,
// in one statement.
func (s *Store) TouchNodes(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	ids := make([]string, 0, len(seen))
	ats := make([]time.Time, 0, len(seen))
	for id, at := range seen {
		ids = append(ids, id)
		ats = append(ats, at.UTC())
	}
	// The rows are locked in ID order first, so two replicas flushing
	// the same nodes never deadlock.
	_, err := s.pool.Exec(ctx, `with t as (select * from unnest($1::text[], $2::timestamptz[]) as t(id, at)),
		l as (select n.id from nodes n join t on n.id = t.id order by n.id for update of n)
		update nodes n set last_seen = greatest(n.last_seen, t.at)
		from t where n.id = t.id and n.id in (select id from l)`, ids, ats)
	if err != nil {
		return fmt.Errorf("storing when %d nodes were last seen: %w", len(seen), err)
	}
	return nil
}

// Expire deletes the reservations that expired before cutoff (their
// results go with their rows), found by the expires index. It runs on one
// replica at a time: when another holds the expiry lock, it returns 0 at
// once. Events keep their copy until Prune drops them.
func (s *Store) Expire(ctx context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, "select pg_try_advisory_xact_lock($1)", lockExpire).Scan(&locked); err != nil || !locked {
			return err
		}
		tag, err := tx.Exec(ctx, "delete from reservations where expires < $1", cutoff)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("deleting reservations expired before %s: %w", cutoff.UTC().Format(time.RFC3339), err)
	}
	return n, nil
}
