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
// BoltStore is one bbolt file, <data-dir>/explorer.db, schema version 3
// (schema 1 lacked the delivery buckets, schema 2 the pages and active
// indexes; opening an older file migrates it):
//
//	meta/
//	  version        → "3"
//	nodes/
//	  <node id>      → NodeRecord JSON (registered, last seen, capacity, stats, version)
//	reservations/
//	  <id>           → provision.Reservation JSON (without its result)
//	results/
//	  <id>           → provision.Result JSON (the node's latest signed result)
//	digests/
//	  <digest>       → <id>  (refuses a second reservation with the same digest)
//	users/
//	  <user id> 0x00 <id> → ""  (lists a user's reservations)
//	pages/                                            (schema 3)
//	  <user id> 0x00 <created µs> 0x00 <id> → ""  (a user's list in pages, by created)
//	active/                                           (schema 3)
//	  <user id> 0x00 <expires µs> 0x00 <id> → ""  (not marked for deletion: the quota
//	                                              counts the keys from now on)
//	events/
//	  <node id>/     (one bucket per node; its bbolt sequence is the node's cursor)
//	    <seq uint64 big-endian> → reservation JSON as published
//	undelivered/                                      (schema 2)
//	  <node id>/     (the node's reservations it has not polled past yet)
//	    <seq uint64 big-endian> → <id>  (the event that created it)
//	delivered/                                        (schema 2)
//	  <id>           → RFC 3339 time the node polled past it (delivered_at)
//	availability/                                     (made at its first write)
//	  <node id>      → Availability JSON (spans its heartbeats cover, boot, reboots)
//	logs/                                             (made at its first write)
//	  <request name> → LogRecord JSON (an owner's log request and the sealed answer)
//
// Times in keys are microseconds since the epoch as a big-endian uint64 with
// the sign bit flipped, so that keys sort as times do. Opening a schema 1
// database files its reservations under undelivered/ by their events;
// opening a schema 1 or 2 database creates pages/ and active/ and fills
// them from reservations/.
//
// # Writes
//
// Every write goes through one group commit (internal/commit): the writes of
// concurrent requests that queue while a transaction commits are applied
// together in the next one, with one fsync, each keeping its own outcome
// (a refused write is rolled back alone). A lone write commits at once. A
// request is answered only after its write is durable.
//
// # Nodes
//
// Every signed request of a node marks it seen, in memory; the times are
// stored every Config.SeenFlush (15 s) in one transaction (TouchNodes) and
// at Close. GET /api/v1/nodes pages through the node records by ID and
// computes each node's status (up, down, unreported) at the server's clock
// from when it was last seen (Config.DownAfter, 3 minutes).
// # Admission
//
// A request is admitted cheapest check first (Server.authenticate): the
// remote address's rate; the signature headers' shape, the timestamp's
// skew and the key's rate before a byte of the body is read; the body
// within a deadline and a memory and byte-rate budget; the signature; a
// token of the key; the replay set, of which each key and each address has
// a share. Every budget belongs to one identity (Limits), kept in maps of
// bounded size, so that one caller's flood is refused for that caller.
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
// Users long-poll the same way on a reservation (ReservationTopic) or on
// their list (UserTopic): a stored result, a delivery (the node polled
// past the reservation's event: MarkDelivered) or a delete publishes
// both. Each key holds at most Config.MaxWatches such polls.
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
//
// # Pages
//
// The read-only pages at /ui/ (package ui) render view models the server
// computes from the store (ui.go): the fleet, a node, a reservation.
package server
