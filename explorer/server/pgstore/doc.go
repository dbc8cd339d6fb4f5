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
// schema is newer than this explorerd knows is refused. Schema 5:
//
//	nodes(id, record jsonb, last_seq, low_seq,
//	      last_seen, free_cru, free_mru, free_sru, free_hru)   (2: the node list)
//	reservations(id, node_id, user_id, digest unique, created, expires,
//	             to_delete, version, body bytea, result bytea,
//	             seq, delivered_at)                            (3: deliveries)
//	index reservations_user_active (user_id, expires) where not to_delete
//	                                                           (4: the user quota)
//	index reservations_expires (expires)                       (5: the expiry job)
//	events(node_id, seq, created, reservation bytea)  primary key (node_id, seq)
//
// The node list (Nodes) filters and pages in SQL: free_* are the node's
// free units (server.NodeRecord.Units), written with every record, and
// last_seen is raised by TouchNodes (never lowered; a reader takes the
// later of it and the record's own). Node IDs are compared and ordered
// with collation "C", byte order, as bbolt orders its keys.
//
// Schema 3 adds to reservations seq (the node's event that created it; 0
// for those of earlier schemas) and delivered_at (when the node polled past that
// event: MarkDelivered), with an index of the undelivered ones by node and
// one of each node's reservations by seq (NodeReservations).
//
// Schema 5 adds the index reservations_expires (expires), for Expire.
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
// After a write commits, its topics are queued for NOTIFY: the node's
// (server.NodeTopic) for a new event; the reservation's and its owner's
// (server.ReservationTopic, server.UserTopic) for a stored result, a
// delivery or a delete, which users' long-polls wait on; one goroutine sends all queued topics in one statement, outside
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
