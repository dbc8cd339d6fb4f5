package provision

import "context"

// SnapshotEntry identifies one reservation's content in a Snapshot.
type SnapshotEntry struct {
	// ID is the reservation's ID.
	ID string
	// Digest is the reservation's digest.
	Digest string
	// Version is the reservation's version.
	Version uint32
}

// Snapshot is a source's full state of this node: the reservations the
// node should hold (neither deleted by their owner nor expired), as of the
// event sequence number Seq.
type Snapshot struct {
	// Seq is the last event the snapshot includes: poll from it next.
	Seq uint64
	// Reservations are the node's active reservations.
	Reservations []SnapshotEntry
}

// Snapshotter is a Poller that also gives a full-state snapshot of this
// node and single reservations. A source.Poll with source.PollOptions.Held
// reconciles from it when a poll fails with ErrCursorGone, and compares it
// with what the node holds every source.PollOptions.CheckEvery (anti-entropy).
type Snapshotter interface {
	// Snapshot returns the source's state of this node.
	Snapshot(ctx context.Context) (*Snapshot, error)
	// Fetch returns reservation id as the source has it.
	Fetch(ctx context.Context, id string) (*Reservation, error)
}
