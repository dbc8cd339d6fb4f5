// Package provision is the model and the engine of provisiond: the
// Reservation a user signs, the Result a node signs, their canonical
// signing bytes, validation, the durable state machine of a reservation,
// the interfaces the Engine consumes (ReservationSource, ReservationCache,
// Feedbacker, Signer, Statser, Primitives) and the Engine itself.
//
// The store (cache), the explorer client (explorer), the primitives and
// the resource units (stats) implement its interfaces and are wired
// together in cmd/provisiond. Of provisiond's own packages it imports only
// small internal ones, each with one job: internal/sched (one operation
// per reservation ID at a time, urgent first), internal/idlock (the record
// lock of an ID), internal/backoff (the one retry policy) and
// internal/strictjson (JSON that reads the same to every reader).
//
// # The data path
//
// One reservation, from its source to the explorer's acknowledgement of
// its result, in the order the code runs it:
//
//  1. Engine.Run reads ReservationSource.Reservations (a PollSource of
//     the explorer, CombinedSource with NewDecommissionSource for expiry)
//     and hands each job to the ingester: ingester.add queues it on the
//     shard of its ID, ingester.drain runs Engine.ingestJob, which calls
//     Engine.ingest and acknowledges the job (the PollSource advances its
//     cursor only then).
//  2. Engine.ingest takes the record lock of the ID (Engine.lock), checks
//     the reservation (Validate), prices it (Statser.Units) and writes it
//     through Engine.accept: accepted, or, when it can start at once,
//     admitted in the same write (Engine.admit with Capacity.Admit: the
//     admission rule) as provisioning, or failed with a signed error
//     result. The write carries its outbox entries and stats
//     (Engine.commitLocked: one store transaction). Engine.admitted asks
//     the scheduler (sched.Scheduler.Request) for the next step.
//  3. A worker (Engine.work) takes the ID from the scheduler and calls
//     Engine.drive, which dispatches on the record's state: Engine.start
//     admits an accepted record (dependencies, capacity); Engine.provision
//     calls Primitives.Provision outside any lock and Engine.settle
//     writes the outcome under the record lock: deployed with its signed
//     result (Engine.newResult, Engine.commit), a retry with backoff, or
//     failed; Engine.decommission does the same for deleting → deleted.
//     The worker returns once the write is durable, then tells the
//     scheduler it is done (sched.Scheduler.Done).
//  4. Engine.sendOutbox, woken by every write with outbox entries, reads
//     the pending entries of the store and delivers them (Engine.deliver:
//     a BatchFeedbacker's one request, or Feedbacker one by one),
//     acknowledging each delivered entry in the store; failures back off.
//
// Beside it: Engine.recover at start (queues what a crash left
// unfinished), Engine.reconcileLoop (inspects deployed workloads) and
// Engine.DecommissionCached (a primitive gives up on a workload; the
// primitives get the Engine from NewEngine, see GiveUpper).
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
