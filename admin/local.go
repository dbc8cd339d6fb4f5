package admin

import (
	"context"

	"github.com/edgeprov/provisiond/provision"
)

// Records is the part of the store a Local reader needs.
type Records interface {
	Get(id string) (*provision.Record, error)
	Scan(fn func(*provision.Record) error, states ...provision.State) error
}

// Local is a Reader over a store, with status and stats supplied by the
// caller: the daemon serves its live figures through it, and the CLI reads
// a database directly through it when no daemon runs.
type Local struct {
	// Store holds the records.
	Store Records
	// StatusFunc returns the status.
	StatusFunc func(ctx context.Context) (*Status, error)
	// StatsFunc returns the stats.
	StatsFunc func(ctx context.Context) (*Stats, error)
}

var _ Reader = (*Local)(nil)

// Status returns StatusFunc's answer.
func (l *Local) Status(ctx context.Context) (*Status, error) { return l.StatusFunc(ctx) }

// Stats returns StatsFunc's answer.
func (l *Local) Stats(ctx context.Context) (*Stats, error) { return l.StatsFunc(ctx) }

// Record returns the record of id.
func (l *Local) Record(_ context.Context, id string) (*provision.Record, error) {
	return l.Store.Get(id)
}

// Records calls fn for every record that passes f, scanning only f.State
// when it is set.
func (l *Local) Records(ctx context.Context, f Filter, fn func(*provision.Record) error) error {
	var states []provision.State
	if f.State != "" {
		states = append(states, f.State)
	}
	return l.Store.Scan(func(rec *provision.Record) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !f.Match(rec) {
			return nil
		}
		return fn(rec)
	}, states...)
}
