package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/server"
)

// lockLogs is the first key of the two-key advisory lock that serialises
// the count and the insert of one user's log requests (the second is
// hashtext of the user ID).
const lockLogs int32 = 0x70727606

var _ server.FleetStore = (*Store)(nil)

// UpdateAvailability applies fn to node's availability record under its
// row lock and stores it, in one transaction.
func (s *Store) UpdateAvailability(ctx context.Context, node string, fn func(*server.Availability) error) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, "select exists (select 1 from nodes where id = $1)", node).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("%w: %s", server.ErrUnknownNode, node)
		}
		// Make the row first, so that its lock serialises every writer.
		if _, err := tx.Exec(ctx, `insert into node_availability (node_id, record) values ($1, '{}') on conflict (node_id) do nothing`, node); err != nil {
			return err
		}
		var raw []byte
		if err := tx.QueryRow(ctx, "select record from node_availability where node_id = $1 for update", node).Scan(&raw); err != nil {
			return err
		}
		var a server.Availability
		if err := json.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("decoding the availability of %s: %w", node, err)
		}
		if err := fn(&a); err != nil {
			return err
		}
		out, err := json.Marshal(&a)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "update node_availability set record = $2 where node_id = $1", node, out)
		return err
	})
}

// Availabilities returns the availability records of nodes that have one.
func (s *Store) Availabilities(ctx context.Context, nodes []string) (map[string]*server.Availability, error) {
	out := map[string]*server.Availability{}
	rows, err := s.pool.Query(ctx, "select node_id, record from node_availability where node_id = any($1)", nodes)
	if err != nil {
		return nil, fmt.Errorf("reading availability: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var raw []byte
		if err := rows.Scan(&id, &raw); err != nil {
			return nil, err
		}
		var a server.Availability
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("decoding the availability of %s: %w", id, err)
		}
		out[id] = &a
	}
	return out, rows.Err()
}

// PutLogRequest stores a new log request; an advisory lock on the user
// makes its count and its insert one step across replicas.
func (s *Store) PutLogRequest(ctx context.Context, rec *server.LogRecord, maxPerUser int, now time.Time) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	q := &rec.Request
	err = s.tx(ctx, func(tx pgx.Tx) error {
		if maxPerUser > 0 {
			if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock($1, hashtext($2))", lockLogs, q.UserID); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `select count(*) from (select 1 from log_requests where user_id = $1 and expires > $2 limit $3) a`,
				q.UserID, now, maxPerUser).Scan(&n); err != nil {
				return err
			}
			if n >= maxPerUser {
				return fmt.Errorf("%w: user %s has %d log requests", server.ErrTooMany, q.UserID, n)
			}
		}
		tag, err := tx.Exec(ctx, `insert into log_requests (name, node_id, user_id, created, expires, record)
			values ($1, $2, $3, $4, $5, $6) on conflict (name) do nothing`, rec.Name, q.NodeID, q.UserID, q.Created, rec.Expires, raw)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: log request %s", server.ErrDuplicate, rec.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing log request: %w", err)
	}
	s.notify(server.LogsTopic(q.NodeID))
	return nil
}

// PendingLogRequests returns node's unanswered requests still honoured at
// now, oldest first.
func (s *Store) PendingLogRequests(ctx context.Context, node string, now time.Time, limit int) ([]*server.LogRecord, error) {
	rows, err := s.pool.Query(ctx, `select record from log_requests where node_id = $1 and answered is null and created >= $2
		order by created limit $3`, node, now.Add(-explorer.LogRequestTTL), limit)
	if err != nil {
		return nil, fmt.Errorf("reading log requests: %w", err)
	}
	defer rows.Close()
	var out []*server.LogRecord
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		var l server.LogRecord
		if err := json.Unmarshal(raw, &l); err != nil {
			return nil, fmt.Errorf("decoding a log request: %w", err)
		}
		if l.Pending(now) {
			out = append(out, &l)
		}
	}
	return out, rows.Err()
}

// AnswerLogRequest stores node's answer to request name.
func (s *Store) AnswerLogRequest(ctx context.Context, node, name string, reply *explorer.LogReply, now time.Time) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var raw []byte
		err := tx.QueryRow(ctx, "select record from log_requests where name = $1 and expires > $2 for update", name, now).Scan(&raw)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: log request %s", server.ErrNotFound, name)
		}
		if err != nil {
			return err
		}
		var l server.LogRecord
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("decoding log request %s: %w", name, err)
		}
		if l.Request.NodeID != node {
			return fmt.Errorf("%w: log request %s is for node %s", server.ErrForbidden, name, l.Request.NodeID)
		}
		if l.Answered != nil {
			return nil
		}
		at := now.UTC()
		l.Answered, l.Reply = &at, reply
		out, err := json.Marshal(&l)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "update log_requests set answered = $2, record = $3 where name = $1", name, at, out)
		return err
	})
}

// LogRecord returns request name with its answer.
func (s *Store) LogRecord(ctx context.Context, name string, now time.Time) (*server.LogRecord, error) {
	var raw []byte
	err := s.pool.QueryRow(ctx, "select record from log_requests where name = $1 and expires > $2", name, now).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: log request %s", server.ErrNotFound, name)
	}
	if err != nil {
		return nil, err
	}
	var l server.LogRecord
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("decoding log request %s: %w", name, err)
	}
	return &l, nil
}

// ExpireLogs deletes the requests expired at now.
func (s *Store) ExpireLogs(ctx context.Context, now time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, "delete from log_requests where expires <= $1", now)
	if err != nil {
		return 0, fmt.Errorf("deleting expired log requests: %w", err)
	}
	return tag.RowsAffected(), nil
}
