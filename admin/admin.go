// Package admin is provisiond's local operator API: a small JSON-over-HTTP
// service on a unix socket (mode 0600) through which the CLI reads what a
// running daemon holds — records, stats, status — without touching its
// database, which bbolt locks exclusively while the daemon runs.
//
//	GET /v1/status                        Status
//	GET /v1/stats                         Stats
//	GET /v1/records?state=&type=&user=    JSON lines of provision.Record
//	GET /v1/records/{id}                  provision.Record
//
// The API is read-only.
package admin

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/edgeprov/provisiond/internal/selfcheck"
	"github.com/edgeprov/provisiond/provision"
)

// Errors of the admin package.
var (
	ErrNoDaemon = errors.New("admin: no daemon listening")
	ErrNotFound = errors.New("admin: not found")
)

// Status is what `provisiond status` shows.
type Status struct {
	// NodeID is the node's ID.
	NodeID string `json:"node_id"`
	// Version is the daemon's version.
	Version string `json:"version"`
	// Running is true when a daemon answered; false when read from the database.
	Running bool `json:"running"`
	// Started is when the daemon started.
	Started time.Time `json:"started,omitzero"`
	// Explorer is the explorer URL the daemon polls.
	Explorer string `json:"explorer,omitempty"`
	// CaughtUp is true once the daemon has read everything the explorer held at start.
	CaughtUp bool `json:"caught_up"`
	// Cursor is the stored position in the explorer's event stream.
	Cursor uint64 `json:"cursor"`
	// OutboxDepth is the number of results and stats waiting for the explorer.
	OutboxDepth int `json:"outbox_depth"`
	// Queued is the number of operations waiting for a worker.
	Queued int `json:"queued"`
	// Busy is the number of workers at work.
	Busy int `json:"busy"`
	// LastPollError is the last error polling the explorer, if any.
	LastPollError string `json:"last_poll_error,omitempty"`
	// LastPollErrorAt is when it happened.
	LastPollErrorAt time.Time `json:"last_poll_error_at,omitzero"`
	// ClockSkew is set when the explorer's clock (the Date header of its
	// last reply) was more than MaxClockSkew from the node's.
	ClockSkew *ClockSkew `json:"clock_skew,omitempty"`
	// Records counts records per state.
	Records map[provision.State]int `json:"records"`
	// Database is the path of the database.
	Database string `json:"database"`
	// Disk is the disk the node's data takes: measured at the daemon's
	// last garbage collection, or, when no daemon runs, by the command.
	Disk *DiskUsage `json:"disk,omitempty"`
	// Checks is the self-check: the daemon's at its start, or, when no
	// daemon runs, the status command's own (Checks.By says which).
	Checks *selfcheck.Report `json:"checks,omitempty"`
}

// DiskUsage is the disk allocated to each kind of the node's data, in
// bytes (allocated blocks: sparse volume images count what they hold).
type DiskUsage struct {
	// Images is the unpacked container images.
	Images int64 `json:"images_bytes"`
	// Containers is the containers' bundles (what they wrote outside
	// their volumes) and runc's state.
	Containers int64 `json:"containers_bytes"`
	// Volumes is the volume images.
	Volumes int64 `json:"volumes_bytes"`
	// Logs is the containers' logs.
	Logs int64 `json:"logs_bytes"`
	// Database is the database file.
	Database int64 `json:"database_bytes"`
	// MeasuredAt is when it was measured.
	MeasuredAt time.Time `json:"measured_at"`
	// LastSweep is when the daemon last collected garbage (zero when the
	// status was read without a daemon).
	LastSweep time.Time `json:"last_sweep,omitzero"`
	// Removed says what the last sweep removed: images, temporary
	// directories and final records.
	Removed *SweepCounts `json:"removed,omitempty"`
}

// SweepCounts counts what one garbage collection removed.
type SweepCounts struct {
	Images    int   `json:"images"`
	Temporary int   `json:"temporary"`
	Records   int   `json:"records"`
	Bytes     int64 `json:"image_bytes"`
}

// MaxClockSkew is how far the explorer's clock may be from the node's
// before Status reports it (30 s).
const MaxClockSkew = 30 * time.Second

// ClockSkew is a gap between the node's clock and the explorer's.
type ClockSkew struct {
	// Seconds is the explorer's time minus the node's: positive when the
	// node's clock is behind.
	Seconds float64 `json:"seconds"`
	// MeasuredAt is when the reply that showed it came, by the node's clock.
	MeasuredAt time.Time `json:"measured_at"`
	// Hint says what it breaks and how to fix it.
	Hint string `json:"hint"`
}

// Stats is what `provisiond stats` shows: the node's stats (the fields of
// provision.Stats, flattened in JSON) and, per user with active workloads,
// what they hold beside the user's quota.
type Stats struct {
	provision.Stats
	// Quotas is the quota configuration: the default and the per-user
	// overrides (--user-quota, --user-quota-file).
	Quotas provision.Quotas `json:"quotas"`
	// Users lists the users with active workloads, by user ID.
	Users []UserUsage `json:"users"`
}

// UserUsage is what one user's active workloads hold on the node, and the
// quota that applies to the user.
type UserUsage struct {
	// User is the user's ID.
	User string `json:"user"`
	// Used is what the user's active workloads hold.
	Used provision.Usage `json:"used"`
	// Quota is the user's quota (zero fields are unlimited).
	Quota provision.Quota `json:"quota"`
}

// NewStats builds the Stats of s with each user's usage, sorted by user
// ID, and quota.
func NewStats(s provision.Stats, quotas provision.Quotas, usage map[string]provision.Usage) *Stats {
	out := &Stats{Stats: s, Quotas: quotas, Users: make([]UserUsage, 0, len(usage))}
	for _, user := range slices.Sorted(maps.Keys(usage)) {
		out.Users = append(out.Users, UserUsage{User: user, Used: usage[user], Quota: quotas.For(user)})
	}
	return out
}

// Filter selects records; empty fields match everything.
type Filter struct {
	State provision.State
	Type  provision.ReservationType
	User  string
}

// Match reports whether rec passes the filter.
func (f Filter) Match(rec *provision.Record) bool {
	r := rec.Reservation
	return (f.State == "" || rec.State == f.State) &&
		(f.Type == "" || r.Type == f.Type) &&
		(f.User == "" || r.UserID == f.User)
}

// Reader is what the CLI reads a node through: the running daemon (Client)
// or, when none runs, the database itself.
type Reader interface {
	Status(ctx context.Context) (*Status, error)
	Stats(ctx context.Context) (*Stats, error)
	Records(ctx context.Context, f Filter, fn func(*provision.Record) error) error
	Record(ctx context.Context, id string) (*provision.Record, error)
}
