package server

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
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
	// Version is the provisiond version the node last reported with its
	// capacity; empty for a node older than that report.
	Version string `json:"version,omitempty"`
}

// NodeUnits are a node's resource units as the explorer last heard them.
type NodeUnits struct {
	// Total is measured on the node's hardware.
	Total provision.Units
	// System is the node's system reserve, kept out of every workload.
	System provision.Units
	// Reserved is what the node's active workloads take.
	Reserved provision.Units
	// Free is Total − System − Reserved, each unit floored at zero: what a
	// new workload may still take.
	Free provision.Units
}

// Units returns the node's units: capacity and system reserve from its
// latest stats (computed by the node at each change) or, before any
// stats, from its reported capacity; reserved from its stats. A node that
// reported neither has all zero.
func (n *NodeRecord) Units() NodeUnits {
	var u NodeUnits
	switch {
	case n.Stats != nil:
		u.Total, u.System, u.Reserved = n.Stats.Capacity.Total, n.Stats.Capacity.Reserved, n.Stats.Used
	case n.Capacity != nil:
		u.Total, u.System = n.Capacity.Total, n.Capacity.Reserved
	}
	u.Free = u.Total.Sub(u.System).Sub(u.Reserved)
	return u
}

// Fits reports whether each free unit of the node is at least want's.
func (n *NodeRecord) Fits(want provision.Units) bool {
	return len(want.Short(n.Units().Free)) == 0
}

// NodeQuery selects a page of nodes for Store.Nodes.
type NodeQuery struct {
	// MinFree keeps the nodes whose free units (NodeRecord.Units) are each
	// at least these; the zero Units keeps every node.
	MinFree provision.Units
	// SeenSince, when not zero, keeps the nodes whose stored LastSeen is
	// not before it.
	SeenSince time.Time
	// After keeps the nodes whose ID sorts after it (byte order): the
	// last ID of the page before; empty starts from the first.
	After string
	// Limit is the most nodes returned (at least 1).
	Limit int
}

// Check returns an ErrBadRequest error for a query without a positive
// Limit: the one rule both stores apply before listing.
func (q *NodeQuery) Check() error {
	if q.Limit < 1 {
		return fmt.Errorf("%w: listing nodes: limit %d", ErrBadRequest, q.Limit)
	}
	return nil
}

// Keep reports whether rec passes q's filters (not its cursor or limit).
func (q *NodeQuery) Keep(rec *NodeRecord) bool {
	return (q.SeenSince.IsZero() || !rec.LastSeen.Before(q.SeenSince)) && rec.Fits(q.MinFree)
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
	// CreateReservationWithin is CreateReservation under a quota: it fails
	// with ErrQuota (Quota.Check), storing nothing, when r's user already
	// has q.MaxActive or more active reservations (Active at now), or when
	// r's units (Units) beside those of the user's active reservations
	// pass q.MaxUnits. The count, the sum and the insert are one atomic
	// step: concurrent submissions of one user never pass the quota
	// together. The zero Quota limits nothing.
	CreateReservationWithin(ctx context.Context, r *provision.Reservation, now time.Time, q Quota) (uint64, error)
	// Reservation returns a reservation with its latest result, or ErrNotFound.
	Reservation(ctx context.Context, id string) (*provision.Reservation, error)
	// ReservationsOf returns a user's reservations with their results,
	// oldest first (by created, then ID).
	ReservationsOf(ctx context.Context, user string) ([]*provision.Reservation, error)
	// ReservationsPage returns one page of a user's reservations with their
	// results, ordered by created (to the microsecond), then ID: those
	// after p.After (the zero cursor: from the first), at most p.Limit of
	// them and, past the first, no more than p.MaxBytes of stored
	// reservation and result bytes. next is the cursor of the page's last
	// reservation, or the zero cursor when no reservation follows it.
	ReservationsPage(ctx context.Context, user string, p Page) (list []*provision.Reservation, next Cursor, err error)
	// MarkDelete runs check on reservation id (check sets the delete
	// signature or refuses), then stores it and publishes it to its node.
	// A repeat of the same signed delete changes nothing and publishes
	// nothing (seq 0).
	MarkDelete(ctx context.Context, id string, check func(*provision.Reservation) error) (*provision.Reservation, uint64, error)
	// UpdateReservation replaces reservation id by next, its next
	// version, once check accepted the stored version (with its result):
	// next's digest must be held by no reservation (ErrDuplicate), the
	// replaced digest stays held until the reservation expires, the
	// stored result is dropped and next is published to its node (and
	// counts as not delivered yet), in one transaction.
	UpdateReservation(ctx context.Context, id string, next *provision.Reservation, check func(cur *provision.Reservation) error) (uint64, error)
	// UpdateReservationWithin is UpdateReservation under a quota: once
	// check accepted the stored version, it fails with ErrQuota
	// (Quota.CheckUpdate), storing nothing, when next's units in place of
	// the stored version's, beside those of the user's other active
	// reservations (Active at now), pass q.MaxUnits; the count does not
	// change. The sum and the write are one atomic step with the user's
	// other submissions. The zero Quota limits nothing.
	UpdateReservationWithin(ctx context.Context, id string, next *provision.Reservation, now time.Time, q Quota, check func(cur *provision.Reservation) error) (uint64, error)
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
	// Nodes returns up to q.Limit registered nodes that pass q's filters,
	// ordered by ID, after q.After.
	Nodes(ctx context.Context, q NodeQuery) ([]*NodeRecord, error)
	// TouchNodes raises the stored LastSeen of each registered node in
	// seen to its time when that is later, in one transaction; nodes not
	// registered are skipped.
	TouchNodes(ctx context.Context, seen map[string]time.Time) error
	// MarkDelivered records that node stored its events up to seq upTo
	// (it polled from upTo): each of its reservations created by an event
	// at or below upTo and not yet delivered gets Delivered = now. It
	// returns the reservations it marked; a repeat, or an unknown node,
	// marks nothing.
	MarkDelivered(ctx context.Context, node string, upTo uint64, now time.Time) ([]Delivery, error)
	// NodeReservations returns up to limit of node's reservations with
	// their results and deliveries, the last submitted first (in the
	// reverse order of the node's events that created them); an unknown
	// node has none.
	NodeReservations(ctx context.Context, node string, limit int) ([]*provision.Reservation, error)
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

// Delivery names a reservation MarkDelivered marked, for the wake-ups of
// its watchers.
type Delivery struct {
	// ID is the reservation's ID.
	ID string
	// UserID is its owner.
	UserID string
}

// Notifier is implemented by a store that several explorerd processes
// share: a write made through any of them must wake the long-polls held by
// all of them.
type Notifier interface {
	// Listen calls wake(topic) for each topic published on the database by
	// any process (the server's topics: NodeTopic, ReservationTopic,
	// UserTopic), and wakeAll whenever
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

// Page selects a page of a user's reservations (Store.ReservationsPage).
type Page struct {
	// After is the cursor the page follows; the zero cursor starts at the
	// first reservation.
	After Cursor
	// Limit is the most reservations the page holds (at least 1).
	Limit int
	// MaxBytes bounds the stored bytes (reservation and result) of a page:
	// a reservation that would pass it ends the page, unless it is the
	// first (0: no bound).
	MaxBytes int
}

// Cursor is a position in the list of a user's reservations: the created
// time (to the microsecond) and the ID of the last reservation seen. The
// zero Cursor is the start of the list.
type Cursor struct {
	// Micros is the reservation's created time, in microseconds since the
	// Unix epoch.
	Micros int64
	// ID is the reservation's ID.
	ID string
}

// Full reports whether a page that holds n reservations ends before the
// next one, whose stored bytes bring the page's to size: Limit (at least
// 1) is reached, or the next one would pass MaxBytes and is not the
// first. Both stores fill their pages by this rule.
func (p Page) Full(n, size int) bool {
	return n >= max(p.Limit, 1) || (n > 0 && p.MaxBytes > 0 && size > p.MaxBytes)
}

// CursorOf returns the cursor of r: the position right after it.
func CursorOf(r *provision.Reservation) Cursor {
	return Cursor{Micros: r.Created.UnixMicro(), ID: r.ID}
}

// IsZero reports whether c is the start of the list.
func (c Cursor) IsZero() bool { return c == Cursor{} }

// String returns c as it travels in ?cursor= and "next": the
// microseconds, a dot and the ID; "" for the zero cursor.
func (c Cursor) String() string {
	if c.IsZero() {
		return ""
	}
	return strconv.FormatInt(c.Micros, 10) + "." + c.ID
}

// maxCursorID is the longest reservation ID a cursor may name.
const maxCursorID = 64

// ParseCursor parses what Cursor.String returns; "" is the zero cursor.
// Anything else fails with ErrBadRequest.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	num, id, ok := strings.Cut(s, ".")
	micros, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || id == "" || len(id) > maxCursorID || strconv.FormatInt(micros, 10) != num {
		return Cursor{}, fmt.Errorf("%w: cursor %q is not one this explorer returned", ErrBadRequest, s)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return Cursor{}, fmt.Errorf("%w: cursor %q is not one this explorer returned", ErrBadRequest, s)
		}
	}
	return Cursor{Micros: micros, ID: id}, nil
}

// NodeTopic is the notification topic of node's event stream.
func NodeTopic(node string) string { return "node:" + node }

// ReservationTopic is the notification topic of what users watch of a
// reservation: a stored result, its delivery to the node, a delete.
func ReservationTopic(id string) string { return "reservation:" + id }

// UserTopic is the notification topic of a change to any of user's
// reservations (the same changes as ReservationTopic).
func UserTopic(user string) string { return "user:" + user }

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
