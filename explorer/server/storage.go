package server

import (
	"context"
	"sort"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/provision"
)

// NodeRecord is what the explorer keeps about a node.
type NodeRecord struct {
	// NodeID is the node's base58 ID.
	NodeID string `json:"node_id"`
	// Registered is when the node first registered.
	Registered time.Time `json:"registered"`
	// LastSeen is the last stored time the node sent a request.
	LastSeen time.Time `json:"last_seen"`
	// Capacity is the node's last reported capacity, if any.
	Capacity *provision.Capacity `json:"capacity,omitempty"`
	// Stats are the node's last reported stats, if any.
	Stats *provision.Stats `json:"stats,omitempty"`
}

// Store is the explorer's database. BoltStore (one bbolt file, the default
// for one machine) and pgstore.Store (PostgreSQL, shared by several
// explorerd processes) implement it; storetest.Run is the conformance suite
// both pass. Every method that publishes an event gives it the next number
// of its node's gapless sequence, in the same transaction as the change.
type Store interface {
	// RegisterNode records a node; registering again changes nothing and
	// reports false.
	RegisterNode(ctx context.Context, id string, now time.Time) (created bool, err error)
	// Node returns a node's record and its last event sequence number, or
	// ErrUnknownNode.
	Node(ctx context.Context, id string) (*NodeRecord, uint64, error)
	// UpdateNode applies fn to a registered node's record and stores it.
	UpdateNode(ctx context.Context, id string, fn func(*NodeRecord)) error
	// CreateReservation assigns r an ID, stores it and publishes it to its
	// node, in one transaction, and returns the event's sequence number. It
	// fails with ErrUnknownNode or ErrDuplicate (another reservation holds
	// the digest).
	CreateReservation(ctx context.Context, r *provision.Reservation) (uint64, error)
	// Reservation returns a reservation with its latest result, or ErrNotFound.
	Reservation(ctx context.Context, id string) (*provision.Reservation, error)
	// ReservationsOf returns a user's reservations with their results,
	// oldest first (by created, then ID).
	ReservationsOf(ctx context.Context, user string) ([]*provision.Reservation, error)
	// MarkDelete runs check on reservation id (check sets the delete
	// signature or refuses), then stores it and publishes it to its node.
	// A repeat of the same signed delete changes nothing and publishes
	// nothing (seq 0).
	MarkDelete(ctx context.Context, id string, check func(*provision.Reservation) error) (*provision.Reservation, uint64, error)
	// PutResults stores a batch of a node's results in one transaction:
	// check(i, r) checks rs[i] against its stored reservation, a nil rs[i]
	// is skipped, and a result is stored only when it Supersedes the stored
	// one. It returns, per result, whether it was stored and why it was
	// refused; err is set only when the transaction as a whole failed, and
	// then nothing was stored.
	PutResults(ctx context.Context, rs []*provision.Result, check func(i int, r *provision.Reservation) error) (stored []bool, errs []error, err error)
	// Events returns up to limit events of node after from, and the cursor
	// to ask from next. A cursor below the retained events fails with ErrGone.
	Events(ctx context.Context, node string, from uint64, limit int) ([]explorer.WireEvent, uint64, error)
	// State returns the node's full-state snapshot: its active reservations
	// (neither deleted nor expired at now) and the sequence number the
	// snapshot is as of, read in one consistent view.
	State(ctx context.Context, node string, now time.Time) (*explorer.NodeState, error)
	// Expire deletes the reservations that expired before cutoff (Expires,
	// created plus duration, is before it) with their results and indexes,
	// and returns how many it deleted. The server calls it with now minus
	// Config.ReservationRetention, so an expired reservation stays readable
	// for the retention period; while it stays it is no longer Active. A
	// store shared by replicas makes sure only one at a time does the work.
	Expire(ctx context.Context, cutoff time.Time) (int64, error)
	// InjectEvent publishes raw to node without any check (for tests).
	InjectEvent(ctx context.Context, node string, raw []byte) (uint64, error)
	// Close releases the store; writes still queued are committed first.
	Close() error
}

// Notifier is implemented by a store that several explorerd processes
// share: a write made through any of them must wake the long-polls held by
// all of them.
type Notifier interface {
	// Listen calls wake(topic) for each topic published on the database by
	// any process (the server's topics: NodeTopic), and wakeAll whenever
	// notifications may have been missed: on (re)connecting, and every
	// second while the listener is disconnected. It returns when ctx ends.
	Listen(ctx context.Context, wake func(topic string), wakeAll func())
}

// Pruner is implemented by a store that drops old events. The server calls
// Prune periodically on every replica; the store makes sure only one
// replica at a time does the work.
type Pruner interface {
	// Prune drops the events published before cutoff and raises each
	// node's low-water mark past them; a cursor below it then gets ErrGone.
	// It returns how many events it dropped.
	Prune(ctx context.Context, cutoff time.Time) (int64, error)
}

// NodeTopic is the notification topic of node's event stream.
func NodeTopic(node string) string { return "node:" + node }

// Supersedes reports whether res is to replace stored, the result a
// reservation holds (nil when none): a repeat of the stored result or an
// older one is acknowledged and kept out.
func Supersedes(stored, res *provision.Result) bool {
	return stored == nil || (stored.Signature != res.Signature && !res.Created.Before(stored.Created))
}

// Active reports whether r belongs in a node's full-state snapshot at now:
// not deleted by its owner and not expired.
func Active(r *provision.Reservation, now time.Time) bool {
	return !r.ToDelete && !r.Expired(now)
}

// SortReservations orders list oldest first: by created, then by ID.
func SortReservations(list []*provision.Reservation) {
	sort.SliceStable(list, func(i, j int) bool {
		if !list[i].Created.Equal(list[j].Created) {
			return list[i].Created.Before(list[j].Created)
		}
		return list[i].ID < list[j].ID
	})
}

// SortState orders a snapshot's reservations by ID.
func SortState(st *explorer.NodeState) {
	sort.Slice(st.Reservations, func(i, j int) bool { return st.Reservations[i].ID < st.Reservations[j].ID })
}
