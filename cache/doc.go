// Package cache is the durable store of provisiond: reservation records with
// their states, the expiry, digest and key indexes, the outbox of results and
// stats waiting for the explorer, and the cursors of the sources, in one
// bbolt file. Store implements provision.Store.
//
// # Bucket tree (schema version 2)
//
//	meta
//	├── version          → uint64 BE: the schema version (2)
//	├── outbox-seq       → uint64 BE: the last outbox Seq assigned
//	└── stats-seq        → uint64 BE: Seq of the pending stats entry (absent when none)
//	reservations
//	└── <id>             → JSON provision.Record
//	states
//	├── accepted
//	│   └── <id>         → units entry: cru u64 BE ‖ mru, sru, hru float64 bits BE ‖
//	│                      len(user) u8 ‖ user ‖ type
//	├── provisioning     (same)
//	├── deployed         (same)
//	├── error            (same)
//	├── deleting         (same)
//	└── deleted          (same)
//	expiry
//	└── <expires ‖ id>   → empty; expires is the unix-nano time as uint64 BE with the
//	                       sign bit flipped (ordered); records not in a Final state only
//	digests
//	└── <digest>         → id (every record, final ones too: replays stay refused,
//	                       until Purge removes a final record long expired)
//	keys
//	└── <key>            → id (live records only: a Final record releases its key)
//	outbox
//	└── <seq u64 BE>     → JSON provision.OutboxEntry
//	cursors
//	└── <name>           → uint64 BE
//
// Every Add and Save writes the record, every index change and its outbox
// entries together or not at all. Writes are group-committed: those that
// queue up while a commit and its fsync run share the next bbolt
// transaction, each keeping its own outcome (a write that fails is rolled
// back alone), and a write returns once its transaction is durable.
// Expired is a cursor walk of
// the expiry bucket from its start: O(expired), whatever the number of
// records. Scan with states and ScanUnits read the states buckets, so a
// stats rebuild decodes no record it does not need.
//
// # Schema versions and migrations
//
// The version in meta names the layout above. Open runs every registered
// migration from the file's version up to the newest, one transaction per
// step, each step writing its new version: a file without a version
// (version 0: new, or empty) is initialised by the 0 → 1 step. The 1 → 2
// step adds the owner (user ID) to every units entry, read from its record,
// so that each user's usage (quotas) is rebuilt at start from the states
// buckets alone, as the total is; it decodes every record once and rewrites
// its entry, in one transaction. A file with a
// version newer than this build knows is refused with ErrSchemaTooNew. Every
// change of this tree adds a migration, a test for it, and a new drawing.
// An optional field added to the record's JSON is no change of the tree:
// older builds ignore it and a record written before it reads as its zero
// value (provision.Record.Refused came so, without a new version;
// TestRecordRefusedSurvivesReopen).
//
// # Locking
//
// bbolt holds an flock on the file: exclusive for a writer, shared for
// ReadOnly. A second Open while the daemon runs therefore fails after
// Options.Timeout with ErrLocked, and so does a ReadOnly Open: bbolt readers
// in other processes are not tracked by the writer's freelist, so reading a
// file a daemon is writing would not be safe anyway. Tools inspect a running
// node through the daemon; ReadOnly is for a stopped one.
package cache
