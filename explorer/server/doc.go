// Package server is the reference explorer: it registers nodes, accepts
// user-signed reservations, serves each node its event stream by long-poll,
// stores the nodes' signed results and stats, and relays owner-signed
// deletes. Every request is signed (see package explorer); the API is
// described in docs/explorer-api.md.
//
// # Database
//
// The server keeps its state in a Store: BoltStore by default, or the one
// Config.Store names (pgstore.Store: PostgreSQL, shared by several
// explorerd processes). Both pass the conformance suite storetest.Run.
//
// BoltStore is one bbolt file, <data-dir>/explorer.db, schema version 1:
//
//	meta/
//	  version        → "1"
//	nodes/
//	  <node id>      → nodeRecord JSON (registered, last seen, capacity, stats)
//	reservations/
//	  <id>           → provision.Reservation JSON (without its result)
//	results/
//	  <id>           → provision.Result JSON (the node's latest signed result)
//	digests/
//	  <digest>       → <id>  (refuses a second reservation with the same digest)
//	users/
//	  <user id> 0x00 <id> → ""  (lists a user's reservations)
//	events/
//	  <node id>/     (one bucket per node; its bbolt sequence is the node's cursor)
//	    <seq uint64 big-endian> → reservation JSON as published
//
// # Writes
//
// Every write goes through one group commit (internal/commit): the writes of
// concurrent requests that queue while a transaction commits are applied
// together in the next one, with one fsync, each keeping its own outcome
// (a refused write is rolled back alone). A lone write commits at once. A
// request is answered only after its write is durable.
//
// # Long-poll
//
// A poll that finds no event after its cursor subscribes to its node's
// topic (NodeTopic; a channel that a publish closes and replaces), queries
// again (the waiter is registered before the query, so a commit between
// the two is not missed) and waits for the topic, the asked wait, the
// client going away, or the server shutting down; a wake-up that finds no
// event waits again. The server publishes the topic after its own writes;
// a store that is a Notifier also delivers the writes of other processes
// (LISTEN/NOTIFY), and wakes every waiter to query while it cannot. No
// goroutine exists per idle node beyond the held request itself.
//
// # Retention
//
// A store that is a Pruner drops events older than Config.EventRetention;
// a poll from a cursor below a node's low-water mark gets 410 Gone (ErrGone)
// and the node reconciles from GET /api/v1/nodes/{node}/state.
//
// Every store deletes, through Store.Expire, the reservations that expired
// more than Config.ReservationRetention ago (30 days by default); until
// then an expired reservation stays readable but is not Active. The server
// runs the job at start and every Config.ExpireInterval; a store shared by
// replicas lets one at a time do it.
package server
