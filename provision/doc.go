// Package provision is the model and the engine of provisiond: the
// Reservation a user signs, the Result a node signs, their canonical
// signing bytes, validation, the durable state machine of a reservation,
// the interfaces the Engine consumes (ReservationSource, ReservationCache,
// Feedbacker, Signer, Statser, Primitives) and the Engine itself.
//
// The package imports nothing of provisiond's own: the store (cache), the
// explorer client (explorer), the primitives and the resource units (stats)
// implement its interfaces and are wired together in cmd/provisiond.
//
// # Canonical bytes
//
// Every signature covers a domain tag and a list of fields, each preceded
// by its length as a big-endian uint32:
//
//	reservation: "provisiond/reservation/v1", node_id, user_id, type,
//	             created (UTC RFC 3339 nano), duration (decimal ns),
//	             reference, version (decimal), data (CanonicalData)
//	delete:      "provisiond/delete/v1", id, digest
//	result:      "provisiond/result/v1", node_id, id, digest,
//	             version (decimal), state, created, message, data
//
// The digest of a reservation is the hex sha256 of its challenge. The
// complete rules (timestamp form, data compaction, absent fields) are in
// docs/explorer-api.md, for verifiers that do not use this code; golden
// vectors live in testdata/vectors.json, and scripts/verify-vectors.py
// checks them from that document alone.
package provision
