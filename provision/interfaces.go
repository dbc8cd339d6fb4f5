package provision

import (
	"context"
	"time"
)

// ReservationJob is one item a ReservationSource delivers to the Engine.
type ReservationJob struct {
	// Reservation is the reservation to ingest; nil for a marker job.
	Reservation *Reservation
	// Err is set when the source could not decode an item; the Engine answers
	// it with a signed error result when Reservation carries at least an ID.
	Err error
	// Expired is set by the decommission source: the reservation (already in
	// the store) has expired and must be decommissioned.
	Expired bool
	// Last is the "caught up" marker: the source has delivered everything
	// the explorer held when the daemon started. Sent once.
	Last bool
	// Ack, when not nil, is called by the Engine once the job is durably
	// persisted (or refused); the poll source advances its cursor only after
	// every job of a batch was acknowledged.
	Ack func(error)
}

// ReservationSource delivers jobs to the Engine until ctx ends. The channel
// is closed when the source stops.
type ReservationSource interface {
	Reservations(ctx context.Context) <-chan ReservationJob
}

// Event is one item of a node's event stream at the explorer.
type Event struct {
	// Seq is the event's sequence number for this node.
	Seq uint64 `json:"seq"`
	// Reservation is the reservation (new, or with a signed delete).
	Reservation *Reservation `json:"reservation"`
	// Err is set by a Poller that could not decode this item; Reservation
	// then holds whatever could be read of it (at least the ID, if any).
	Err error `json:"-"`
}

// Poller fetches the events of this node after sequence number from,
// waiting up to the poller's hold time when there are none. It returns the
// events and the cursor to ask from next; ErrPollEOS when the stream ended.
type Poller interface {
	Poll(ctx context.Context, from uint64) (events []Event, next uint64, err error)
}

// ReservationCache is the durable store of reservation records. Every method
// is one transaction; Add and Save write the record, its indexes and the
// given outbox entries together or not at all.
type ReservationCache interface {
	// Add stores a new record. It fails with ErrExists when the ID is known,
	// ErrReplay when another ID holds the same Digest, and ErrConflict when
	// another live record holds the same Key.
	Add(rec *Record, out ...*OutboxEntry) error
	// Get returns the record of id, or ErrNotFound.
	Get(id string) (*Record, error)
	// Save overwrites an existing record (ErrNotFound if absent) and
	// enqueues out in the same transaction. A record entering a Final state
	// leaves the expiry index and releases its Key.
	Save(rec *Record, out ...*OutboxEntry) error
	// Scan calls fn for every record in one of states (all records when none
	// are given); it stops at the first error fn returns.
	Scan(fn func(*Record) error, states ...State) error
	// Expired returns the IDs of records not in a Final state whose
	// reservation expired at or before now, in expiry order, in O(expired).
	Expired(now time.Time) ([]string, error)
	// NextExpiry returns the earliest expiry among records not in a Final
	// state; false when there is none.
	NextExpiry() (time.Time, bool, error)
	// Owner returns the ID of the live record holding key, or ErrNotFound.
	Owner(key string) (string, error)
}

// Outbox holds results and stats until the explorer acknowledges them.
type Outbox interface {
	// Pending returns up to n entries, oldest first.
	Pending(n int) ([]*OutboxEntry, error)
	// Ack removes the entries seqs in one transaction: all or none.
	// Acknowledging an absent entry is no error.
	Ack(seqs ...uint64) error
	// Depth returns how many entries wait.
	Depth() (int, error)
	// Enqueue adds entries without a record change (stats at start).
	Enqueue(out ...*OutboxEntry) error
}

// WriteQueuer is the optional part of a ReservationCache whose Add and
// Save can be queued and awaited apart. QueueAdd and QueueSave do what Add
// and Save do, but return as soon as the write has its place in the
// store's commit order (after every write queued or made before it
// returned, before every later one); wait returns its outcome once it is
// durable, and sets the Seq of out. Neither rec nor out may change before
// wait returned, and every wait must be called. The Engine queues the
// writes that change the active set under its tally lock, so that their
// stats entries commit in the order they were computed, and waits outside
// of it, so that they share a commit.
type WriteQueuer interface {
	QueueAdd(rec *Record, out ...*OutboxEntry) (wait func() error)
	QueueSave(rec *Record, out ...*OutboxEntry) (wait func() error)
}

// Trimmer is the optional part of a store that keeps caches it can drop.
// The Engine calls Trim whenever it has no operation running or queued,
// so that an idle node does not hold what served its last burst of work.
// Trim must be safe to call at any time, concurrently with other calls.
type Trimmer interface {
	Trim()
}

// UnitsScanner is the optional part of a store that reads the ID, owner
// (user ID), type and units of the records in the given states without
// decoding whole records: what a rebuild of the used units and of each
// user's usage at start needs.
type UnitsScanner interface {
	ScanUnits(fn func(id, user string, typ ReservationType, u Units) error, states ...State) error
}

// Cursors keeps the position of each source durably.
type Cursors interface {
	// Cursor returns the stored position of source name (0 when none).
	Cursor(name string) (uint64, error)
	// SetCursor stores the position of source name.
	SetCursor(name string, pos uint64) error
}

// Store is everything the Engine keeps on disk. When enqueuing an
// OutboxStats entry, a store drops older pending stats entries: the latest
// wins.
type Store interface {
	ReservationCache
	Outbox
	Cursors
}

// Feedbacker delivers results and stats to the explorer. An error marked
// Permanent means the explorer refused the message for good (a *Refusal,
// with its reason, when the explorer judged the entry itself): the outbox
// drops it. Every other error is retried until the entry is delivered, so
// a Feedbacker must never mark a failure of the request permanent.
type Feedbacker interface {
	Feedback(ctx context.Context, nodeID string, r *Result) error
	UpdateStats(ctx context.Context, nodeID string, s *Stats) error
}

// BatchFeedbacker is the optional part of a Feedbacker that delivers
// several results in one request, so that the outbox does not pay one
// round trip per result. errs has one entry per result, in order: nil when
// the explorer stored (or already held) it, an error (Permanent when the
// explorer refused it for good) otherwise. err is set when the request as
// a whole failed; errs is then nil, and err should be temporary.
type BatchFeedbacker interface {
	FeedbackBatch(ctx context.Context, nodeID string, rs []*Result) (errs []error, err error)
}

// Signer signs with the node's identity.
type Signer interface {
	Sign(msg []byte) ([]byte, error)
}

// Statser knows what reservations cost and what the node has.
type Statser interface {
	// Units returns the resource units a reservation takes.
	Units(r *Reservation) (Units, error)
	// Capacity returns the node's capacity and system reserve.
	Capacity(ctx context.Context) (Capacity, error)
}

// ProvisionerFunc creates the workload of a reservation and returns the data
// of its result. It is idempotent: a workload that already exists with this
// spec is success.
type ProvisionerFunc func(ctx context.Context, r *Reservation) (any, error)

// DecomissionerFunc removes the workload of a reservation. It is
// idempotent: a workload that does not exist is success. (The spelling is
// the predecessor's.)
type DecomissionerFunc func(ctx context.Context, r *Reservation) error

// Primitives provisions and decommissions workloads of every type.
type Primitives interface {
	Provision(ctx context.Context, r *Reservation) (any, error)
	Decommission(ctx context.Context, r *Reservation) error
}

// Inspector is the optional part of Primitives that checks a deployed
// workload: nil when it is present and healthy, an error wrapping
// ErrVanished when it is gone (the Engine re-provisions it), any other error
// when it is unhealthy.
type Inspector interface {
	Inspect(ctx context.Context, r *Reservation) error
}

// StatusInspector is the optional part of an Inspector that also returns
// a deployed workload's current status: the data of its result (nil when
// the workload has none to report). When the data differs from that of
// the workload's last signed result, the Engine signs a new "ok" result
// carrying it, at most one per StatusInterval for each reservation.
type StatusInspector interface {
	InspectStatus(ctx context.Context, r *Reservation) (data any, err error)
}

// InspectRequester is told that a deployed workload changed on its own
// and should be inspected soon: the Engine's InspectSoon.
type InspectRequester interface {
	InspectSoon(id string)
}

// Watched is the optional part of Primitives that notices changes of
// deployed workloads by itself (a container's supervisor sees it exit or
// fail its health check). NewEngine hands them the Engine before it
// returns.
type Watched interface {
	WatchedBy(r InspectRequester)
}

// Resource is a runtime object a primitive owns on this node.
type Resource struct {
	// Type is the primitive that owns it.
	Type ReservationType `json:"type"`
	// ID is the reservation (or, for networks, the NetworkID) it belongs to.
	ID string `json:"id"`
	// Name is the object's name on the node (it starts with Prefix).
	Name string `json:"name"`
}

// Lister is the optional part of Primitives that lists what exists on the
// node under Prefix and removes an orphan. It never lists or removes an
// object without Prefix.
type Lister interface {
	List(ctx context.Context) ([]Resource, error)
	Remove(ctx context.Context, res Resource) error
}

// Decommissioner gives up on a workload with a reason: the Engine's
// DecommissionCached.
type Decommissioner interface {
	DecommissionCached(ctx context.Context, id, reason string) error
}

// GiveUpper is the optional part of Primitives that may give up on a
// workload of its own accord (a crash-looping container). engine.New hands
// them the Engine before it returns, so they can never call an engine
// that does not exist yet.
type GiveUpper interface {
	GiveUpTo(d Decommissioner)
}

// PollObserver records the failures of a poll: the Engine's ObservePoll.
type PollObserver interface {
	ObservePoll(err error)
}

// ObservedSource is the optional part of a ReservationSource that reports
// its failed polls. engine.New hands it the Engine before it returns.
type ObservedSource interface {
	ReportTo(o PollObserver)
}

// Waker is the optional part of a ReservationSource that re-checks its
// timing when the Engine ingested something new (the decommission source
// looks at the earliest expiry again). The Engine calls Wake after every
// accepted reservation; Wake must not block.
type Waker interface {
	Wake()
}

// Table is the explicit provisioner and decommissioner table of Primitives.
// A type missing from the table gets a permanent ErrUnknownType.
type Table struct {
	Provisioners   map[ReservationType]ProvisionerFunc
	Decomissioners map[ReservationType]DecomissionerFunc
}

var _ Primitives = Table{}

// Provision calls the provisioner of r.Type.
func (t Table) Provision(ctx context.Context, r *Reservation) (any, error) {
	f, ok := t.Provisioners[r.Type]
	if !ok {
		return nil, Permanentf("%w: no provisioner for %q", ErrUnknownType, r.Type)
	}
	return f(ctx, r)
}

// Decommission calls the decommissioner of r.Type.
func (t Table) Decommission(ctx context.Context, r *Reservation) error {
	f, ok := t.Decomissioners[r.Type]
	if !ok {
		return Permanentf("%w: no decommissioner for %q", ErrUnknownType, r.Type)
	}
	return f(ctx, r)
}
