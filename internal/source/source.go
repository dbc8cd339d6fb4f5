// Package source delivers reservations to the Engine: Poll reads the
// explorer's events from a durable cursor (and repairs a lost cursor, or
// drift, from a snapshot), Decommission sends the expiries of the store's
// records as they fall due, and Combine merges sources into one.
package source

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/backoff"
	"github.com/edgeprov/provisiond/provision"
)

// Defaults of PollOptions and DecommissionOptions.
const (
	DefaultPollBackoffBase = time.Second
	DefaultPollBackoffMax  = time.Minute
	DefaultExpiryMaxWait   = time.Minute
	DefaultExpiryRecheck   = time.Second
)

// PollOptions configures a Poll.
type PollOptions struct {
	// BackoffBase and BackoffMax bound the jittered exponential backoff
	// after a failed poll. Defaults: 1s and 1m.
	BackoffBase, BackoffMax time.Duration
	// OnError, when set, is called with every failed poll (and every
	// failure to read or store the cursor), beside the PollObserver that
	// engine.New hands the source (see ObservedSource). Default: nil.
	OnError func(err error)
	// Log receives the source's log lines. Default: disabled.
	Log zerolog.Logger
	// Held lists the node's live reservations (not deleted, not being
	// deleted, not expired) for the comparison with a Snapshotter's
	// snapshot. Without it the source cannot reconcile: a poll that fails
	// with ErrCursorGone is retried like any failure. Default: nil.
	Held func() ([]provision.SnapshotEntry, error)
	// CheckEvery is how often a caught-up source compares the snapshot of
	// a Snapshotter with Held (anti-entropy); drift is logged, reported to
	// OnError and repaired. Default (0): never.
	CheckEvery time.Duration
}

// Poll is the ReservationSource of an explorer's event stream. It
// polls from the durable cursor of its name and advances the cursor only
// after the Engine acknowledged every job of a batch (persisted or
// refused). A failed poll backs off and polls the same cursor again: it
// never skips and never resets. A bad item (Event.Err) is passed on as a
// job with Err, answered by the Engine, and does not hold up the rest.
type Poll struct {
	p       provision.Poller
	c       provision.Cursors
	name    string
	backoff backoff.Policy
	onError func(error)
	// observer is the Engine, handed over by engine.New through ReportTo.
	observer atomic.Pointer[pollObserver]
	log      zerolog.Logger
	held     func() ([]provision.SnapshotEntry, error)
	every    time.Duration
}

var (
	_ provision.ReservationSource = (*Poll)(nil)
	_ provision.ObservedSource    = (*Poll)(nil)
	_ provision.ObservedSource    = (*Combined)(nil)
)

// NewPoll returns a Poll that polls p and keeps its cursor in
// c under name.
func NewPoll(p provision.Poller, c provision.Cursors, name string, opts PollOptions) *Poll {
	if p == nil || c == nil || name == "" {
		panic("source: NewPoll needs a Poller, Cursors and a name")
	}
	b := backoff.Policy{Base: positive(opts.BackoffBase, DefaultPollBackoffBase), Max: positive(opts.BackoffMax, DefaultPollBackoffMax)}
	return &Poll{p: p, c: c, name: name, backoff: b, onError: opts.OnError,
		log:  opts.Log.With().Str("component", "poll").Str("source", name).Logger(),
		held: opts.Held, every: opts.CheckEvery}
}

// Reservations starts polling and returns the jobs. The channel is closed
// when ctx ends or the stream ends (ErrPollEOS). The Last marker is sent
// once, after the first poll that returned no events.
func (s *Poll) Reservations(ctx context.Context) <-chan provision.ReservationJob {
	ch := make(chan provision.ReservationJob)
	go func() {
		defer close(ch)
		s.run(ctx, ch)
	}()
	return ch
}

// pollObserver boxes a PollObserver for an atomic pointer.
type pollObserver struct{ provision.PollObserver }

// ReportTo makes o the observer of every failed poll (the Engine's
// ObservePoll, which engine.New hands over).
func (s *Poll) ReportTo(o provision.PollObserver) { s.observer.Store(&pollObserver{o}) }

func (s *Poll) report(err error) {
	if s.onError != nil {
		s.onError(err)
	}
	if o := s.observer.Load(); o != nil {
		o.ObservePoll(err)
	}
}

func (s *Poll) run(ctx context.Context, ch chan<- provision.ReservationJob) {
	failures := 0
	// pause backs off after a failure; false when ctx ended.
	pause := func(err error, msg string) bool {
		failures++
		s.report(err)
		wait := s.backoff.Delay(failures)
		s.log.Warn().Err(err).Int("failures", failures).Dur("retry_in", wait).Msg(msg)
		return backoff.Sleep(ctx, wait)
	}
	var cursor uint64
	for {
		c, err := s.c.Cursor(s.name)
		if err == nil {
			cursor = c
			break
		}
		if !pause(err, "reading cursor failed") {
			return
		}
	}
	failures = 0
	caughtUp := false
	send := func(job provision.ReservationJob) bool {
		select {
		case ch <- job:
			return true
		case <-ctx.Done():
			return false
		}
	}
	sn, _ := s.p.(provision.Snapshotter)
	if s.held == nil {
		sn = nil
	}
	lastCheck := time.Now()
	for ctx.Err() == nil {
		events, next, err := s.p.Poll(ctx, cursor)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, provision.ErrCursorGone) && sn != nil:
			// The source dropped the events after the cursor: take its
			// full state instead, then follow the stream from there.
			seq, err := s.reconcile(ctx, sn, send)
			if err != nil {
				if !pause(err, "reconciling from the source's snapshot failed") {
					return
				}
				continue
			}
			if err := s.c.SetCursor(s.name, seq); err != nil {
				if !pause(err, "storing cursor failed") {
					return
				}
				continue
			}
			s.log.Info().Uint64("from", cursor).Uint64("cursor", seq).Msg("reconciled from the source's snapshot")
			cursor, failures, lastCheck = seq, 0, time.Now()
			continue
		case errors.Is(err, provision.ErrPollEOS):
			s.log.Info().Uint64("cursor", cursor).Msg("event stream ended")
			if !caughtUp {
				send(provision.ReservationJob{Last: true})
			}
			return
		case err != nil:
			if !pause(err, "poll failed") {
				return
			}
			continue
		}
		if len(events) == 0 {
			if next != cursor {
				if err := s.c.SetCursor(s.name, next); err != nil {
					if !pause(err, "storing cursor failed") {
						return
					}
					continue
				}
				cursor = next
			}
			failures = 0
			if !caughtUp {
				caughtUp = true
				if !send(provision.ReservationJob{Last: true}) {
					return
				}
			}
			if sn != nil && s.every > 0 && time.Since(lastCheck) >= s.every {
				lastCheck = time.Now()
				if err := s.check(ctx, sn, cursor, send); err != nil {
					s.report(err)
					s.log.Warn().Err(err).Msg("anti-entropy check failed")
				}
			}
			continue
		}
		// One answer per job, in any order (the Engine ingests jobs
		// concurrently): the batch is done once every job answered.
		acks := make(chan error, len(events))
		for _, ev := range events {
			var once sync.Once
			ack := func(err error) {
				once.Do(func() { acks <- err }) // a second answer is ignored
			}
			if !send(provision.ReservationJob{Reservation: ev.Reservation, Err: ev.Err, Ack: ack}) {
				return
			}
		}
		var failed error
		for range events {
			select {
			case <-ctx.Done():
				return
			case err := <-acks:
				failed = errors.Join(failed, err)
			}
		}
		if failed != nil {
			// Not all persisted: poll the same cursor again; the Engine
			// answers repeats from its records.
			if !pause(failed, "engine could not persist a batch") {
				return
			}
			continue
		}
		if err := s.c.SetCursor(s.name, next); err != nil {
			if !pause(err, "storing cursor failed") {
				return
			}
			continue
		}
		s.log.Debug().Int("events", len(events)).Uint64("cursor", next).Msg("batch persisted")
		cursor, failures = next, 0
	}
}

// DecommissionOptions configures a Decommission.
type DecommissionOptions struct {
	// MaxWait is the longest the source sleeps between looks at the
	// expiry index. Default: 1m.
	MaxWait time.Duration
	// Recheck is how soon it looks again while expired records are still
	// being decommissioned. Default: 1s.
	Recheck time.Duration
	// Log receives the source's log lines. Default: disabled.
	Log zerolog.Logger
}

// Decommission is the ReservationSource of expiries: it sleeps until
// the earliest expiry in the store (or MaxWait, or a Wake), then emits an
// Expired job for each record store.Expired returns: O(expired), never a
// scan of every record. An ID is emitted once while it stays expired; it is
// emitted again only when the Engine failed to persist it.
type Decommission struct {
	store   provision.ReservationCache
	now     func() time.Time
	maxWait time.Duration
	recheck time.Duration
	log     zerolog.Logger
	wake    chan struct{}
}

var (
	_ provision.ReservationSource = (*Decommission)(nil)
	_ provision.Waker             = (*Decommission)(nil)
)

// NewDecommission returns a Decommission over store, with now
// as its clock (time.Now when nil).
func NewDecommission(store provision.ReservationCache, now func() time.Time, opts DecommissionOptions) *Decommission {
	if store == nil {
		panic("source: NewDecommission without a store")
	}
	if now == nil {
		now = time.Now
	}
	return &Decommission{
		store:   store,
		now:     now,
		maxWait: positive(opts.MaxWait, DefaultExpiryMaxWait),
		recheck: positive(opts.Recheck, DefaultExpiryRecheck),
		log:     opts.Log.With().Str("component", "expiry").Logger(),
		wake:    make(chan struct{}, 1),
	}
}

// Wake makes the source look at the earliest expiry again (a reservation
// that expires sooner may have arrived). It never blocks.
func (s *Decommission) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Reservations starts the source; the channel is closed when ctx ends.
func (s *Decommission) Reservations(ctx context.Context) <-chan provision.ReservationJob {
	ch := make(chan provision.ReservationJob)
	go func() {
		defer close(ch)
		s.run(ctx, ch)
	}()
	return ch
}

func (s *Decommission) run(ctx context.Context, ch chan<- provision.ReservationJob) {
	var mu sync.Mutex
	sent := map[string]bool{}
	for {
		wait := s.maxWait
		ids, err := s.store.Expired(s.now())
		if err != nil {
			s.log.Error().Err(err).Msg("reading expired reservations failed")
			wait = s.recheck
		}
		mu.Lock()
		still := make(map[string]bool, len(ids))
		var fresh []string
		for _, id := range ids {
			if !sent[id] {
				fresh = append(fresh, id)
			}
			still[id] = true
		}
		sent = still
		mu.Unlock()
		for _, id := range fresh {
			r := &provision.Reservation{ID: id}
			if rec, err := s.store.Get(id); err == nil {
				r = rec.Reservation
			}
			job := provision.ReservationJob{Reservation: r, Expired: true, Ack: func(err error) {
				if err != nil {
					mu.Lock()
					delete(sent, id) // not persisted: emit again
					mu.Unlock()
				}
			}}
			select {
			case ch <- job:
				s.log.Debug().Str("id", id).Str("type", string(r.Type)).Msg("reservation expired")
			case <-ctx.Done():
				return
			}
		}
		if err == nil {
			switch next, ok, nerr := s.store.NextExpiry(); {
			case nerr != nil:
				s.log.Error().Err(nerr).Msg("reading next expiry failed")
				wait = s.recheck
			case ok:
				if d := next.Sub(s.now()); d <= 0 {
					wait = min(wait, s.recheck) // expired ones still being removed
				} else {
					wait = min(wait, d)
				}
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// Combined is the fan-in of several sources.
type Combined struct {
	sources []provision.ReservationSource
}

var (
	_ provision.ReservationSource = (*Combined)(nil)
	_ provision.Waker             = (*Combined)(nil)
)

// Combine returns the fan-in of sources: their jobs on one channel,
// which is closed when every input is closed.
func Combine(sources ...provision.ReservationSource) *Combined {
	return &Combined{sources: sources}
}

// Reservations starts every source and forwards their jobs. Every send
// watches ctx; after ctx ended the inputs are drained (jobs dropped
// unacknowledged) until they close.
func (c *Combined) Reservations(ctx context.Context) <-chan provision.ReservationJob {
	out := make(chan provision.ReservationJob)
	var wg sync.WaitGroup
	for _, src := range c.sources {
		in := src.Reservations(ctx)
		wg.Go(func() {
			for job := range in {
				select {
				case out <- job:
				case <-ctx.Done():
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// ReportTo hands o to every input that is an ObservedSource.
func (c *Combined) ReportTo(o provision.PollObserver) {
	for _, src := range c.sources {
		if r, ok := src.(provision.ObservedSource); ok {
			r.ReportTo(o)
		}
	}
}

// Wake wakes every input that is a Waker.
func (c *Combined) Wake() {
	for _, src := range c.sources {
		if w, ok := src.(provision.Waker); ok {
			w.Wake()
		}
	}
}

// reconcile brings the node to the source's snapshot (see repair) and
// returns the sequence number to poll from next.
func (s *Poll) reconcile(ctx context.Context, sn provision.Snapshotter, send func(provision.ReservationJob) bool) (uint64, error) {
	d, err := s.snapshot(ctx, sn)
	if err != nil {
		return 0, err
	}
	s.log.Warn().Uint64("seq", d.Seq).Int("missing", len(d.Missing)).Int("changed", len(d.Changed)).Int("extra", len(d.Extra)).
		Msg("the source pruned the events after the cursor; reconciling from its snapshot")
	if err := s.repair(ctx, sn, d, send); err != nil {
		return 0, err
	}
	return d.Seq, nil
}

// check compares the source's snapshot with the node's records while the
// source is caught up at cursor; drift is reported (as a *Drift error) and
// repaired. A snapshot taken at another sequence number than the cursor
// is not comparable and is skipped.
func (s *Poll) check(ctx context.Context, sn provision.Snapshotter, cursor uint64, send func(provision.ReservationJob) bool) error {
	d, err := s.snapshot(ctx, sn)
	if err != nil || d.Seq != cursor || d.Empty() {
		return err
	}
	s.log.Warn().Uint64("seq", d.Seq).Strs("missing", d.Missing).Strs("changed", d.Changed).Strs("extra", d.Extra).Msg("drift from the source")
	if err := s.repair(ctx, sn, d, send); err != nil {
		return errors.Join(d, fmt.Errorf("repairing the drift: %w", err))
	}
	return d
}

// positive returns v, or def when v is not positive (an unset option).
func positive(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}
