package source

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/edgeprov/provisiond/provision"
)

// Drift is what a comparison of a Snapshot with the node's records found.
type Drift struct {
	// Seq is the snapshot's sequence number.
	Seq uint64
	// Missing are in the snapshot but not held by the node.
	Missing []string
	// Changed are held at another digest or version than the snapshot's.
	Changed []string
	// Extra are held by the node but not in the snapshot: deleted or
	// expired at the source.
	Extra []string
}

// Empty reports whether the node and the snapshot agree.
func (d *Drift) Empty() bool {
	return len(d.Missing) == 0 && len(d.Changed) == 0 && len(d.Extra) == 0
}

// Error describes the drift as an error for PollOptions.OnError.
func (d *Drift) Error() string {
	return fmt.Sprintf("source: drift from the source at seq %d: %d missing, %d changed, %d extra", d.Seq, len(d.Missing), len(d.Changed), len(d.Extra))
}

// compare compares a snapshot with what the node holds.
func compare(snap *provision.Snapshot, held []provision.SnapshotEntry) *Drift {
	d := &Drift{Seq: snap.Seq}
	have := make(map[string]provision.SnapshotEntry, len(held))
	for _, h := range held {
		have[h.ID] = h
	}
	want := make(map[string]bool, len(snap.Reservations))
	for _, e := range snap.Reservations {
		want[e.ID] = true
		switch h, ok := have[e.ID]; {
		case !ok:
			d.Missing = append(d.Missing, e.ID)
		case h.Digest != e.Digest || h.Version != e.Version:
			d.Changed = append(d.Changed, e.ID)
		}
	}
	for _, h := range held {
		if !want[h.ID] {
			d.Extra = append(d.Extra, h.ID)
		}
	}
	sort.Strings(d.Missing)
	sort.Strings(d.Changed)
	sort.Strings(d.Extra)
	return d
}

// snapshot reads the source's snapshot and compares it with the node's
// records.
func (s *Poll) snapshot(ctx context.Context, sn provision.Snapshotter) (*Drift, error) {
	snap, err := sn.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the source's snapshot: %w", err)
	}
	held, err := s.held()
	if err != nil {
		return nil, fmt.Errorf("listing the node's records: %w", err)
	}
	return compare(snap, held), nil
}

// repair hands the Engine, as jobs, what the drift says the node lacks:
// the missing and changed reservations, and the owner-signed deletes of the
// extra ones (an extra one that merely expired is the Decommission's
// work). Every reservation is fetched from the source and, like any event,
// verified by the Engine. It returns once the Engine answered every job.
func (s *Poll) repair(ctx context.Context, sn provision.Snapshotter, d *Drift, send func(provision.ReservationJob) bool) error {
	var rs []*provision.Reservation
	for _, id := range append(append([]string{}, d.Missing...), d.Changed...) {
		r, err := sn.Fetch(ctx, id)
		if err != nil {
			return fmt.Errorf("fetching reservation %s: %w", id, err)
		}
		rs = append(rs, r)
	}
	for _, id := range d.Extra {
		r, err := sn.Fetch(ctx, id)
		switch {
		case err != nil && provision.IsTemporary(err):
			return fmt.Errorf("fetching reservation %s: %w", id, err)
		case err != nil:
			s.log.Warn().Err(err).Str("id", id).Msg("a reservation the node holds is unknown to the source")
		case r.ToDelete:
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return nil
	}
	acks := make(chan error, len(rs))
	for _, r := range rs {
		r.Result = nil // as an event carries it
		var once sync.Once
		ack := func(err error) { once.Do(func() { acks <- err }) }
		if !send(provision.ReservationJob{Reservation: r, Ack: ack}) {
			return ctx.Err()
		}
	}
	var failed error
	for range rs {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-acks:
			failed = errors.Join(failed, err)
		}
	}
	return failed
}
