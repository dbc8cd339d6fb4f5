package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// notify queues topics for the next NOTIFY. It is called after a write
// committed: a NOTIFY inside the write transaction would hold the
// transaction (and the node's row lock) longer and serialise the commits
// of every writer on PostgreSQL's notification queue lock.
func (s *Store) notify(topics ...string) {
	if len(topics) == 0 {
		return
	}
	s.mu.Lock()
	for _, t := range topics {
		s.pending[t] = struct{}{}
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// notifyLoop sends the queued topics, all of them in one statement, each
// time notify kicks it. A failed send keeps the topics and is retried a
// second later. When ctx ends it sends what is queued one last time.
func (s *Store) notifyLoop(ctx context.Context) {
	for {
		select {
		case <-s.kick:
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s.sendPending(sctx)
			cancel()
			return
		}
		if err := s.sendPending(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("notify failed; retrying in 1s")
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
}

// sendPending sends the queued topics; on failure it queues them again.
func (s *Store) sendPending(ctx context.Context) error {
	s.mu.Lock()
	topics := make([]string, 0, len(s.pending))
	for t := range s.pending {
		topics = append(topics, t)
	}
	clear(s.pending)
	s.mu.Unlock()
	if len(topics) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, "select pg_notify($1, t) from unnest($2::text[]) as t", channel, topics)
	if err != nil {
		s.mu.Lock()
		for _, t := range topics {
			s.pending[t] = struct{}{}
		}
		s.mu.Unlock()
	}
	return err
}

// listenCheck is how long the listener waits for a notification before it
// checks its connection with a ping.
const listenCheck = 10 * time.Second

// Listen holds LISTEN on a connection of its own and calls wake with each
// topic notified by any explorerd on the database. It calls wakeAll when it
// (re)connects, since notifications sent while it was not listening are
// lost, and every second while it cannot connect: the waiters then query
// the database themselves. A dropped connection is replaced at once, then
// every second while connecting fails. It returns when ctx ends.
func (s *Store) Listen(ctx context.Context, wake func(topic string), wakeAll func()) {
	down := false
	for {
		connected, err := s.listenOnce(ctx, wake, wakeAll, &down)
		if ctx.Err() != nil {
			return
		}
		if !down {
			s.log.Warn().Err(err).Msg("listener disconnected; polling every second until it reconnects")
			down = true
		}
		wakeAll()
		if connected {
			continue // it worked a moment ago: try again at once
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
	}
}

// listenOnce connects, listens and delivers notifications until the
// connection fails; connected says whether it got as far as listening.
func (s *Store) listenOnce(ctx context.Context, wake func(string), wakeAll func(), down *bool) (connected bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	conn, err := pgx.ConnectConfig(cctx, s.listen)
	cancel()
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "listen "+channel); err != nil {
		return false, err
	}
	if *down {
		s.log.Info().Msg("listener reconnected")
		*down = false
	}
	wakeAll()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			wake(n.Payload)
		case ctx.Err() != nil:
			return true, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, err
			}
		default:
			return true, err
		}
	}
}
