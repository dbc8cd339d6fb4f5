// Package pgstore keeps the explorer's state in PostgreSQL (through
// github.com/jackc/pgx/v5), so that several explorerd processes on one
// database serve the same API: a node may poll one while users write
// through another. bbolt (server.BoltStore) stays the default for one
// machine.
//
// # Schema
//
// Ordered SQL migrations (migrations/NNNN_name.sql, embedded) are applied
// at Open, one transaction each, under an advisory lock; the table
// schema_version records each version applied, and a database whose
// schema is newer than this explorerd knows is refused. Schema 1:
//
//	nodes(id, record jsonb, last_seq, low_seq)
//	reservations(id, node_id, user_id, digest unique, created, expires,
//	             to_delete, version, body bytea, result bytea)
//	events(node_id, seq, created, reservation bytea)  primary key (node_id, seq)
//
// Schema 2 adds the index reservations_expires (expires), for Expire.
//
// # Events
//
// Every node has its own gapless sequence: a write that publishes an event
// takes the next number with `update nodes set last_seq = last_seq + 1 …
// returning` and inserts the event in the same transaction. The row lock
// orders the node's writers, so event N+1 commits after event N and a
// reader never sees a hole that a later commit fills (a global serial
// cursor would lose events to late commits). A rolled-back write gives its
// number back.
//
// After a write commits, its topic (server.NodeTopic) is queued for
// NOTIFY; one goroutine sends all queued topics in one statement, outside
// the write transactions. Listen holds LISTEN on a direct connection (not
// from the pool); when it drops it reconnects at once, then every second,
// and while it is disconnected it wakes every waiter every second, so that
// they query the database: the polling fallback. On (re)connecting it wakes
// every waiter once, for the notifications it missed.
//
// Prune drops the events older than a cutoff as a prefix of each node's
// stream and raises the node's low-water mark (low_seq); a poll from a
// cursor below it gets server.ErrGone (410) and the node reconciles from
// State. Prune runs on one replica at a time (pg_try_advisory_xact_lock).
//
// Expire deletes the reservations that expired before a cutoff (results
// are columns of their rows) under an advisory lock of its own, so one
// replica at a time does it; events keep their copy until Prune.
package pgstore
