// Package server is the reference explorer: it registers nodes, accepts
// user-signed reservations, serves each node its event stream by long-poll,
// stores the nodes' signed results and stats, and relays owner-signed
// deletes. Every request is signed (see package explorer); the API is
// described in docs/explorer-api.md.
//
// # Database
//
// One bbolt file, <data-dir>/explorer.db, schema version 2:
//
//	meta/
//	  version        → "2"
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
//	pages/                                            (schema 2)
//	  <user id> 0x00 <created µs> 0x00 <id> → ""  (a user's list in pages, by created)
//	active/                                           (schema 2)
//	  <user id> 0x00 <expires µs> 0x00 <id> → ""  (not marked for deletion: the quota
//	                                              counts the keys from now on)
//	events/
//	  <node id>/     (one bucket per node; its bbolt sequence is the node's cursor)
//	    <seq uint64 big-endian> → reservation JSON as published
//
// Times in keys are microseconds since the epoch as a big-endian uint64 with
// the sign bit flipped, so that keys sort as times do. Opening a schema 1
// database creates pages/ and active/ and fills them from reservations/.
//
// # Writes
//
// Every write goes through one group commit (internal/commit): the writes of
// concurrent requests that queue while a transaction commits are applied
// together in the next one, with one fsync, each keeping its own outcome
// (a refused write is rolled back alone). A lone write commits at once. A
// request is answered only after its write is durable.
//
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
// notification (a channel that a publish closes and replaces) and waits for
// it, the asked wait, the client going away, or the server shutting down.
// No goroutine exists per idle node beyond the held request itself.
package server
