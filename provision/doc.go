// Package provision is the model of provisiond: the Reservation a user
// signs, the Result a node signs, their canonical signing bytes,
// validation, the workloads, the durable state machine of a reservation
// (Record, State), its errors, and the interfaces through which the
// engine and its parts meet (ReservationSource, Store, Feedbacker,
// Signer, Statser, Primitives and their optional parts).
//
// The runtime lives in small internal packages, each with one job, that
// import this one (never the reverse): internal/engine (the Engine: the
// state machine run by a worker pool, its store writes and outbox
// sender), internal/source (where reservations come from: the explorer's
// poll, the expiry of the store, their combination), internal/ingest (the
// sharded in-order queue of the source's jobs), internal/tally (the units
// of the active workloads), internal/sched (one operation per reservation
// ID at a time, urgent first), internal/idlock (the record lock of an
// ID), internal/backoff (the one retry policy) and internal/strictjson
// (JSON that reads the same to every reader). The store (cache), the
// explorer client (explorer), the primitives and the resource units
// (stats) implement this package's interfaces; cmd/provisiond wires them
// together with engine.New.
//
// # The data path
//
// One reservation, from its source to the explorer's acknowledgement of
// its result, in the order the code runs it (functions of
// internal/engine unless named otherwise):
//
//  1. Engine.Run reads ReservationSource.Reservations (source.Poll of the
//     explorer, source.Combine with source.NewDecommission for expiry)
//     and adds each job to the ingest queue (ingest.Queue.Add), which
//     runs Engine.ingestJob on the shard of the job's ID (Engine.shard);
//     ingestJob calls Engine.ingest and acknowledges the job (the poll
//     source advances its cursor only then).
//  2. Engine.ingest takes the record lock of the ID (Engine.lock), checks
//     the reservation (Validate), prices it (Statser.Units) and writes it
//     through Engine.accept: accepted, or, when it can start at once,
//     through Engine.admission in the same write: Engine.admit, under the
//     tally lock, applies the owner's Quota.Check (Options.Quotas, against
//     the owner's usage in the tally) and Capacity.Admit (the admission
//     rules) and records provisioning, or failed with a signed error
//     result naming the limit (ErrQuota, ErrNoCapacity). The write
//     carries its outbox entries and stats (Engine.commitLocked: one
//     store transaction). Engine.admitted asks the scheduler
//     (sched.Scheduler.Request) for the next step.
//  3. A worker (Engine.work) takes the ID from the scheduler and calls
//     Engine.drive, which dispatches on the record's state: Engine.start
//     runs the same Engine.admission for a record left accepted (a
//     container's dependencies not deployed yet, the capacity unknown);
//     Engine.provision calls Primitives.Provision outside any lock and
//     Engine.settle writes the outcome under the record lock: deployed
//     with its signed result (Engine.newResult, Engine.commit), a retry
//     with backoff, or failed; Engine.decommission does the same for
//     deleting → deleted. The worker returns once the write is durable,
//     then tells the scheduler it is done (sched.Scheduler.Done).
//  4. Engine.sendOutbox, woken by every write with outbox entries, reads
//     the pending entries of the store and delivers them (Engine.deliver:
//     a BatchFeedbacker's one request, or Feedbacker one by one),
//     acknowledging each delivered entry in the store; failures back off.
//
// Beside it: Engine.recover at start (queues what a crash left
// unfinished), Engine.reconcileLoop (inspects deployed workloads) and
// Engine.DecommissionCached (a primitive gives up on a workload; the
// primitives get the Engine from engine.New, see GiveUpper).
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
