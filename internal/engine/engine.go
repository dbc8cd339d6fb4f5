// Package engine runs provisiond's durable state machine: the Engine
// ingests the reservations of its source, persists them, admits,
// provisions and decommissions them through a bounded worker pool,
// reconciles deployed workloads and delivers signed results and stats
// through the store's outbox. The model it runs (reservations, records,
// states, results) and the interfaces it consumes are in package
// provision, whose doc follows one reservation through these functions.
package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/internal/backoff"
	"github.com/edgeprov/provisiond/internal/idlock"
	"github.com/edgeprov/provisiond/internal/ingest"
	"github.com/edgeprov/provisiond/internal/sched"
	"github.com/edgeprov/provisiond/internal/tally"
	"github.com/edgeprov/provisiond/provision"
)

// Defaults of Options.
const (
	DefaultWorkers            = 4
	DefaultOpTimeout          = 5 * time.Minute
	DefaultMaxAttempts        = 5
	DefaultBackoffBase        = time.Second
	DefaultBackoffMax         = 2 * time.Minute
	DefaultDependencyTimeout  = 10 * time.Minute
	DefaultResyncInterval     = 5 * time.Minute
	DefaultMaxInspectFailures = 3
	DefaultStatusInterval     = 10 * time.Second
	DefaultOutboxRate         = rate.Limit(20)
	DefaultOutboxBurst        = 5
)

// Hooks receives the Engine's events for metrics. Every method must return
// quickly and must not call back into the Engine. metrics.Metrics
// implements it.
type Hooks interface {
	// Transition reports a reservation of type typ entering state to.
	Transition(typ provision.ReservationType, to provision.State)
	// Operation reports how long an operation ("provision",
	// "decommission", "inspect", "repair") took and how it ended.
	Operation(typ provision.ReservationType, op string, d time.Duration, err error)
	// PollError reports a failed poll of the explorer.
	PollError(err error)
	// OutboxError reports a failed delivery of an outbox entry.
	OutboxError(kind provision.OutboxKind, err error)
	// Delivered reports an outbox entry the explorer acknowledged.
	Delivered(kind provision.OutboxKind)
	// Refused reports an outbox entry the explorer refused for good and
	// the outbox dropped, with the Refusal's reason ("undeliverable" for
	// a permanent error that carries none).
	Refused(kind provision.OutboxKind, reason string)
}

// NopHooks is Hooks that does nothing: the default of Options.Hooks.
type NopHooks struct{}

var _ Hooks = NopHooks{}

// Transition does nothing.
func (NopHooks) Transition(provision.ReservationType, provision.State) {}

// Operation does nothing.
func (NopHooks) Operation(provision.ReservationType, string, time.Duration, error) {}

// PollError does nothing.
func (NopHooks) PollError(error) {}

// OutboxError does nothing.
func (NopHooks) OutboxError(provision.OutboxKind, error) {}

// Delivered does nothing.
func (NopHooks) Delivered(provision.OutboxKind) {}

// Refused does nothing.
func (NopHooks) Refused(provision.OutboxKind, string) {}

// Options configures an Engine. Source, Store, Primitives, Signer, Statser
// and Feedbacker are required; New panics without them.
type Options struct {
	// NodeID is this node's ID; reservations for other nodes are refused.
	NodeID string
	// Source delivers reservations, expiries and the caught-up marker.
	// When it implements Waker, it is woken after each new reservation.
	Source provision.ReservationSource
	// Store keeps records, the outbox and cursors.
	Store provision.Store
	// Primitives provision and decommission workloads. When they also
	// implement Inspector, deployed workloads are reconciled; when they
	// implement Lister, CleanupResources removes orphans.
	Primitives provision.Primitives
	// Signer signs results with the node's key.
	Signer provision.Signer
	// Statser prices reservations and measures the node.
	Statser provision.Statser
	// Feedbacker delivers results and stats to the explorer.
	Feedbacker provision.Feedbacker
	// Hooks receives events for metrics. Default: NopHooks.
	Hooks Hooks
	// Workers is the number of operations that run at once. Default: 4.
	Workers int
	// OpTimeout bounds one provision, decommission or inspect call.
	// Default: 5m.
	OpTimeout time.Duration
	// MaxAttempts is how often a provision failing with a temporary error
	// is tried before the reservation fails. Default: 5.
	MaxAttempts int
	// BackoffBase and BackoffMax bound the jittered exponential backoff
	// between retries. Defaults: 1s and 2m.
	BackoffBase, BackoffMax time.Duration
	// DependencyTimeout is how long a container waits (from its
	// acceptance) for the network and volumes it names. Default: 10m.
	DependencyTimeout time.Duration
	// ResyncInterval is the period of the reconcile loop. Default: 5m.
	ResyncInterval time.Duration
	// MaxInspectFailures is how many consecutive failed inspections fail
	// a deployed workload. Default: 3.
	MaxInspectFailures int
	// StatusInterval is the shortest time between two results the Engine
	// signs for one reservation because its status changed (see
	// StatusInspector); a later change waits. Default: 10s.
	StatusInterval time.Duration
	// Quotas limits what each user's active workloads may hold on this
	// node (see admit). Default: the zero Quotas, which limits no one.
	Quotas provision.Quotas
	// OutboxRate limits deliveries to the explorer. Default: 20/s.
	OutboxRate rate.Limit
	// OutboxBurst is the burst of OutboxRate. Default: 5.
	OutboxBurst int
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Log receives the Engine's log lines. Default: the zero Logger, which
	// is disabled (like zerolog.Nop()).
	Log zerolog.Logger
}

// Status is a snapshot of the Engine for the CLI and metrics.
type Status struct {
	// Running is true while Run runs.
	Running bool `json:"running"`
	// CaughtUp is true once the sources delivered everything the explorer
	// held at start.
	CaughtUp bool `json:"caught_up"`
	// Queued counts reservations waiting for a worker.
	Queued int `json:"queued"`
	// Waiting counts reservations waiting for a retry or a dependency.
	Waiting int `json:"waiting"`
	// Busy counts workers running an operation.
	Busy int `json:"busy"`
	// Workers is the size of the worker pool.
	Workers int `json:"workers"`
	// LastPollError is the last error a poll source reported ("" if none).
	LastPollError string `json:"last_poll_error,omitempty"`
	// LastPollErrorAt is when it was reported.
	LastPollErrorAt time.Time `json:"last_poll_error_at,omitzero"`
	// OutboxDepth is how many results and stats wait for the explorer, as
	// last seen by the sender.
	OutboxDepth int `json:"outbox_depth"`
	// Stats is the latest computed Stats.
	Stats provision.Stats `json:"stats"`
	// OldestOp is when the longest-running operation now running started;
	// zero when no worker runs one. Operations are bounded by OpTimeout, so
	// one much older than that is stuck.
	OldestOp time.Time `json:"oldest_op,omitzero"`
	// LastProgress is when a worker last started or ended an operation
	// (zero before the first).
	LastProgress time.Time `json:"last_progress,omitzero"`
}

// ingestShards is how many jobs of the source are ingested at once: each
// waits for its write to be durable, so with one every accept waits for an
// fsync of its own; with a few, writes share a commit. Side by side in
// BenchmarkEngineThroughput (bbolt with fsync, 2 shared cores) 1 shard did
// about a tenth of the reservations per second of 256, and 16 as many as
// 256, within the noise. A job goes
// to the shard of its reservation ID, which keeps the jobs of one ID in
// the order the source sent them. A shard's goroutine runs only while it
// has jobs, so an idle Engine holds none. ingestInFlight bounds the jobs
// taken from the source and not yet ingested, whatever their shards.
const (
	ingestShards   = 16
	ingestInFlight = 1024
)

// Engine is provisiond's durable state machine: it ingests reservations
// from its source, persists them, provisions and decommissions them through
// a bounded worker pool, reconciles deployed workloads and delivers signed
// results and stats through the outbox. See DESIGN.md, "Engine".
type Engine struct {
	nodeID  string
	src     provision.ReservationSource
	store   provision.Store
	prims   provision.Primitives
	insp    provision.Inspector
	lister  provision.Lister
	signer  provision.Signer
	statser provision.Statser
	fb      provision.Feedbacker
	hooks   Hooks
	now     func() time.Time
	log     zerolog.Logger

	workers            int
	opTimeout          time.Duration
	maxAttempts        int
	backoff            backoff.Policy
	depTimeout         time.Duration
	resync             time.Duration
	maxInspectFailures int
	statusInterval     time.Duration
	limiter            *rate.Limiter

	sched *sched.Scheduler
	busy  atomic.Int64 // workers running an operation
	// opStart holds, per worker, when its running operation started
	// (UnixNano; 0 while it waits), and lastOp when a worker last started
	// or ended one: the watchdog's measure of progress (Status).
	opStart []atomic.Int64
	lastOp  atomic.Int64
	seed    maphash.Seed
	locks   idlock.Set
	started atomic.Bool

	// tallyMu serialises the tally changes of the record writes that
	// change the active set with the order of those writes in the store
	// (see commit), so that the tally, the stats in the outbox and the
	// store agree.
	tallyMu    sync.Mutex
	tally      *tally.Tally
	quotas     provision.Quotas // replaced by SetQuotas, under tallyMu
	capacity   provision.Capacity
	capacityOK bool
	statsGen   uint64 // numbers the Stats computed (statsLocked)

	outboxWake chan struct{}

	mu        sync.Mutex // guards what follows
	running   bool
	caughtUp  bool
	pollErr   string
	pollErrAt time.Time
	depth     int
	stats     provision.Stats
	statsPub  uint64 // number of the published stats
	subs      map[chan provision.Stats]struct{}
}

// New returns an Engine. It panics when a required dependency is
// missing (a programmer error).
func New(opts Options) *Engine {
	switch {
	case opts.Source == nil:
		panic("engine: New without Source")
	case opts.Store == nil:
		panic("engine: New without Store")
	case opts.Primitives == nil:
		panic("engine: New without Primitives")
	case opts.Signer == nil:
		panic("engine: New without Signer")
	case opts.Statser == nil:
		panic("engine: New without Statser")
	case opts.Feedbacker == nil:
		panic("engine: New without Feedbacker")
	}
	e := &Engine{
		nodeID:             opts.NodeID,
		src:                opts.Source,
		store:              opts.Store,
		prims:              opts.Primitives,
		signer:             opts.Signer,
		statser:            opts.Statser,
		fb:                 opts.Feedbacker,
		hooks:              opts.Hooks,
		now:                opts.Now,
		workers:            positive(opts.Workers, DefaultWorkers),
		opTimeout:          positive(opts.OpTimeout, DefaultOpTimeout),
		maxAttempts:        positive(opts.MaxAttempts, DefaultMaxAttempts),
		backoff:            backoff.Policy{Base: positive(opts.BackoffBase, DefaultBackoffBase), Max: positive(opts.BackoffMax, DefaultBackoffMax)},
		depTimeout:         positive(opts.DependencyTimeout, DefaultDependencyTimeout),
		resync:             positive(opts.ResyncInterval, DefaultResyncInterval),
		maxInspectFailures: positive(opts.MaxInspectFailures, DefaultMaxInspectFailures),
		statusInterval:     positive(opts.StatusInterval, DefaultStatusInterval),
		limiter:            rate.NewLimiter(positive(opts.OutboxRate, DefaultOutboxRate), positive(opts.OutboxBurst, DefaultOutboxBurst)),
		sched:              sched.New(),
		seed:               maphash.MakeSeed(),
		tally:              tally.New(),
		quotas:             opts.Quotas,
		outboxWake:         make(chan struct{}, 1),
		subs:               make(map[chan provision.Stats]struct{}),
	}
	e.opStart = make([]atomic.Int64, e.workers)
	e.insp, _ = opts.Primitives.(provision.Inspector)
	e.lister, _ = opts.Primitives.(provision.Lister)
	if e.hooks == nil {
		e.hooks = NopHooks{}
	}
	if e.now == nil {
		e.now = time.Now
	}
	e.log = opts.Log.With().Str("component", "engine").Logger()
	// The parts that call back into the Engine get it here, once it
	// exists.
	if g, ok := opts.Primitives.(provision.GiveUpper); ok {
		g.GiveUpTo(e)
	}
	if w, ok := opts.Primitives.(provision.Watched); ok {
		w.WatchedBy(e)
	}
	if o, ok := opts.Source.(provision.ObservedSource); ok {
		o.ReportTo(e)
	}
	return e
}

func positive[T int | time.Duration | rate.Limit](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Run recovers the state left by the previous run, then consumes the
// source, runs the workers, the reconcile loop and the outbox sender until
// ctx ends. It waits for every goroutine it started and returns nil after
// ctx ended, or the error that made recovery fail. Run may be called once.
//
// Jobs are ingested concurrently (see ingestShards), those of one
// reservation ID in order. The Last marker is handled only once every job
// the source sent before it was ingested and acknowledged.
func (e *Engine) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		panic("engine: Engine.Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := e.recover(ctx); err != nil {
		return fmt.Errorf("recovering engine state: %w", err)
	}
	e.setRunning(true)
	defer e.setRunning(false)

	var wg sync.WaitGroup
	defer wg.Wait()
	defer e.sched.Stop()
	defer cancel()
	for i := range e.workers {
		wg.Go(func() { e.work(ctx, &e.opStart[i]) })
	}
	wg.Go(func() { e.sendOutbox(ctx) })
	wg.Go(func() { e.reconcileLoop(ctx) })

	waker, _ := e.src.(provision.Waker)
	in := ingest.New(ctx, &wg, ingestShards, ingestInFlight, e.shard, func(ctx context.Context, job provision.ReservationJob) {
		e.ingestJob(ctx, job, waker)
	})
	for job := range e.src.Reservations(ctx) {
		switch {
		case ctx.Err() != nil:
			continue
		case job.Last:
			in.Wait() // every job before the marker is ingested
			e.ack(job, nil)
			if e.setCaughtUp() {
				e.log.Info().Msg("caught up with the sources")
				wg.Go(func() {
					if err := e.CleanupResources(ctx); err != nil {
						e.log.Error().Err(err).Msg("cleanup of orphan resources failed")
					}
				})
			}
			continue
		}
		in.Add(job)
	}
	<-ctx.Done()
	return nil
}

// shard returns the ingest shard of job: that of its reservation ID.
func (e *Engine) shard(job provision.ReservationJob) int {
	if job.Reservation == nil {
		return 0
	}
	return int(maphash.String(e.seed, job.Reservation.ID) % ingestShards)
}

// ingestJob ingests job, acknowledges it and wakes the source when a new
// reservation was accepted.
func (e *Engine) ingestJob(ctx context.Context, job provision.ReservationJob, waker provision.Waker) {
	err := e.ingest(ctx, job)
	e.ack(job, err)
	if err == nil && waker != nil && job.Reservation != nil && !job.Expired {
		waker.Wake()
	}
}

func (e *Engine) ack(job provision.ReservationJob, err error) {
	if job.Ack != nil {
		job.Ack(err)
	}
}

func (e *Engine) setRunning(v bool) {
	e.mu.Lock()
	e.running = v
	e.mu.Unlock()
}

// setCaughtUp marks the engine caught up; true the first time.
func (e *Engine) setCaughtUp() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	first := !e.caughtUp
	e.caughtUp = true
	return first
}

// ObservePoll records the outcome of a poll for Status and Hooks: a poll
// source calls it once New handed it the Engine (ObservedSource). A
// nil err does nothing.
func (e *Engine) ObservePoll(err error) {
	if err == nil {
		return
	}
	e.hooks.PollError(err)
	e.mu.Lock()
	e.pollErr, e.pollErrAt = err.Error(), e.now()
	e.mu.Unlock()
}

// Status returns a snapshot of the Engine.
func (e *Engine) Status() Status {
	queued, waiting := e.sched.Counts()
	busy := int(e.busy.Load())
	var oldest, last time.Time
	for i := range e.opStart {
		if t := e.opStart[i].Load(); t != 0 && (oldest.IsZero() || t < oldest.UnixNano()) {
			oldest = time.Unix(0, t)
		}
	}
	if t := e.lastOp.Load(); t != 0 {
		last = time.Unix(0, t)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return Status{
		Running:         e.running,
		CaughtUp:        e.caughtUp,
		Queued:          queued,
		Waiting:         waiting,
		Busy:            busy,
		Workers:         e.workers,
		LastPollError:   e.pollErr,
		LastPollErrorAt: e.pollErrAt,
		OutboxDepth:     e.depth,
		Stats:           cloneStats(e.stats),
		OldestOp:        oldest,
		LastProgress:    last,
	}
}

// Counters returns a channel that receives the current Stats at once and
// then every new Stats, until ctx ends, when it is closed. A slow reader
// misses intermediate values (the latest wins); the Engine never blocks on
// it.
func (e *Engine) Counters(ctx context.Context) <-chan provision.Stats {
	ch := make(chan provision.Stats, 1)
	e.mu.Lock()
	e.subs[ch] = struct{}{}
	ch <- cloneStats(e.stats)
	e.mu.Unlock()
	context.AfterFunc(ctx, func() {
		e.mu.Lock()
		delete(e.subs, ch)
		close(ch)
		e.mu.Unlock()
	})
	return ch
}

// publish makes s, numbered gen by statsLocked, the current Stats and
// offers it to every subscriber, unless a later Stats was published
// already (commits finish in any order).
func (e *Engine) publish(s provision.Stats, gen uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if gen < e.statsPub {
		return
	}
	e.statsPub = gen
	e.stats = s
	for ch := range e.subs {
		select {
		case <-ch: // drop the stale value: the latest wins
		default:
		}
		ch <- cloneStats(s)
	}
}

func cloneStats(s provision.Stats) provision.Stats {
	w := make(map[provision.ReservationType]uint64, len(s.Workloads))
	for t, n := range s.Workloads {
		w[t] = n
	}
	s.Workloads = w
	return s
}

// statsLocked computes the Stats of the tally and numbers it: a higher
// number is a later state of the tally. e.tallyMu is held.
func (e *Engine) statsLocked() (provision.Stats, uint64) {
	e.statsGen++
	return provision.Stats{Used: e.tally.Total(), Capacity: e.capacity, Workloads: e.tally.Workloads(), Updated: e.now()}, e.statsGen
}

// Usage returns what each user's active workloads hold on this node (a
// fresh map; users with none are absent).
func (e *Engine) Usage() map[string]provision.Usage {
	e.tallyMu.Lock()
	defer e.tallyMu.Unlock()
	return e.tally.Users()
}

// Quotas returns the quotas the Engine enforces.
func (e *Engine) Quotas() provision.Quotas {
	e.tallyMu.Lock()
	defer e.tallyMu.Unlock()
	return e.quotas
}

// SetQuotas replaces the quotas the Engine enforces (the operator's
// reload). Every admission from then on is checked against q; workloads
// already admitted keep running even where q is now below what their owner
// holds (as a Kubernetes ResourceQuota lowered below use), and their owner
// cannot add more until back under it.
func (e *Engine) SetQuotas(q provision.Quotas) {
	e.tallyMu.Lock()
	defer e.tallyMu.Unlock()
	e.quotas = q
}

// lock returns the record lock of id. Ingest, workers and
// DecommissionCached hold it across every read-modify-write of a record
// (until the write is durable), never across a side effect. Each ID has a
// lock of its own, so that a record whose write waits never holds up
// another's.
func (e *Engine) lock(id string) idlock.Lock {
	return e.locks.Of(id)
}

// recover rebuilds the tally (the used units and each user's usage) from
// the store, enqueues a fresh Stats and
// queues what the previous run left unfinished: accepted and provisioning
// records are driven again, deleting ones urgently, deployed ones
// inspected (when the primitives can) and repaired when they vanished.
func (e *Engine) recover(ctx context.Context) error {
	if _, err := e.refreshCapacity(ctx); err != nil {
		e.log.Warn().Err(err).Msg("reading capacity failed")
	}
	tally := tally.New()
	set := func(id, user string, typ provision.ReservationType, u provision.Units) error {
		tally.Set(id, user, typ, u)
		return nil
	}
	var err error
	if us, ok := e.store.(provision.UnitsScanner); ok {
		err = us.ScanUnits(set, provision.Provisioning, provision.Deployed, provision.Deleting)
	} else {
		err = e.store.Scan(func(rec *provision.Record) error {
			return set(rec.ID(), rec.Reservation.UserID, rec.Reservation.Type, rec.Units)
		}, provision.Provisioning, provision.Deployed, provision.Deleting)
	}
	if err != nil {
		return fmt.Errorf("rebuilding used units: %w", err)
	}
	e.tallyMu.Lock()
	e.tally = tally
	stats, gen := e.statsLocked()
	e.tallyMu.Unlock()
	if err := e.store.Enqueue(&provision.OutboxEntry{Kind: provision.OutboxStats, Stats: &stats, Created: stats.Updated}); err != nil {
		return fmt.Errorf("enqueuing stats: %w", err)
	}
	e.publish(stats, gen)

	var n int
	err = e.store.Scan(func(rec *provision.Record) error {
		n++
		switch rec.State {
		case provision.Accepted, provision.Provisioning:
			e.sched.Request(rec.ID(), sched.Drive, false)
		case provision.Deleting:
			e.sched.Request(rec.ID(), sched.Drive, true)
		case provision.Deployed:
			if e.insp != nil {
				e.sched.Request(rec.ID(), sched.Inspect, false)
			}
		}
		return nil
	}, provision.Accepted, provision.Provisioning, provision.Deleting, provision.Deployed)
	if err != nil {
		return fmt.Errorf("scanning unfinished records: %w", err)
	}
	e.log.Info().Int("records", n).Int("active", tally.Len()).Msg("engine state recovered")
	return nil
}

// logr starts a log line about a reservation: every engine line carries
// the reservation ID and type.
func (e *Engine) logr(level zerolog.Level, r *provision.Reservation) *zerolog.Event {
	return e.log.WithLevel(level).Str("id", r.ID).Str("type", string(r.Type))
}

// newResult builds and signs a result for r.
func (e *Engine) newResult(r *provision.Reservation, digest string, state provision.ResultState, msg string, data any) (*provision.Result, error) {
	res := &provision.Result{
		Type:    provision.ReservationType(provision.Truncate(string(r.Type), provision.MaxRefusedField)),
		ID:      r.ID,
		NodeID:  e.nodeID,
		Digest:  digest,
		Version: r.Version,
		Created: e.now(),
		State:   state,
		Message: provision.Truncate(msg, provision.MaxMessageLength),
	}
	if data != nil {
		raw, ok := data.(json.RawMessage)
		if !ok {
			b, err := json.Marshal(data)
			if err != nil {
				return nil, provision.Permanent(fmt.Errorf("encoding result data of %s: %w", r.ID, err))
			}
			raw = b
		}
		if string(raw) != "null" {
			res.Data = raw
		}
	}
	if err := res.Sign(e.signer); err != nil {
		return nil, err
	}
	return res, nil
}

func resultEntry(res *provision.Result) *provision.OutboxEntry {
	return &provision.OutboxEntry{Kind: provision.OutboxResult, Result: res, Created: res.Created}
}

// commit writes rec (already moved to its new state) with res and, when
// the record joins or leaves the active set, a fresh Stats, all in one
// store call (Add when add is set, Save otherwise). from is the state
// before; the caller holds the record lock, which keeps from equal to the
// stored state.
//
// Only writes that change the active set take the tally lock: they change
// the tally and compute the stats under it. When the store is a
// WriteQueuer, such a write is only queued under the lock and awaited after
// it, so that these writes share commits while their stats entries still
// commit in the order they were computed. Until the write is durable the
// tally counts it (admission errs on the safe side meanwhile); should it
// fail, the tally is put back and, since other writes may have computed
// their stats with it, fresh stats are enqueued.
func (e *Engine) commit(rec *provision.Record, from provision.State, res *provision.Result, add bool) error {
	return e.commitQueued(rec, from, res, add)()
}

// commitQueued is commit up to the wait for the write: the function it
// returns waits for it and finishes the commit, and must be called (with
// the record lock still held).
func (e *Engine) commitQueued(rec *provision.Record, from provision.State, res *provision.Result, add bool) (finish func() error) {
	if from.Active() == rec.State.Active() {
		return e.commitLocked(rec, from, res, add)
	}
	e.tallyMu.Lock()
	defer e.tallyMu.Unlock()
	return e.commitLocked(rec, from, res, add)
}

// commitLocked starts commit, with e.tallyMu held when the write changes
// the active set. The function it returns, which must be called after
// e.tallyMu is released, waits for the write and finishes the commit.
func (e *Engine) commitLocked(rec *provision.Record, from provision.State, res *provision.Result, add bool) (finish func() error) {
	return e.commitWith(rec, from, res, add, nil)
}

// commitWith is commitLocked for a write that may also change the units
// the tally counts for an active record (an update and its rollback): was,
// when not nil, is what the tally counted for rec before, and e.tallyMu is
// held. Each extra result is enqueued in the same write without becoming
// rec's Result (the answer to another version of rec).
func (e *Engine) commitWith(rec *provision.Record, from provision.State, res *provision.Result, add bool, was *provision.Units, extra ...*provision.Result) (finish func() error) {
	var out []*provision.OutboxEntry
	for _, x := range extra {
		out = append(out, resultEntry(x))
	}
	if res != nil {
		rec.Result = res
		out = append(out, resultEntry(res))
	}
	changed := from.Active() != rec.State.Active() || was != nil
	undo := func() {
		if was != nil {
			e.tally.Set(rec.ID(), rec.Reservation.UserID, rec.Reservation.Type, *was)
			return
		}
		e.setTally(rec, from.Active())
	}
	var stats provision.Stats
	var gen uint64
	if changed {
		e.setTally(rec, rec.State.Active())
		stats, gen = e.statsLocked()
		out = append(out, &provision.OutboxEntry{Kind: provision.OutboxStats, Stats: &stats, Created: stats.Updated})
	}
	var wait func() error
	queued := false
	if q, ok := e.store.(provision.WriteQueuer); ok {
		if add {
			wait = q.QueueAdd(rec, out...)
		} else {
			wait = q.QueueSave(rec, out...)
		}
		queued = true
	} else {
		var err error
		if add {
			err = e.store.Add(rec, out...)
		} else {
			err = e.store.Save(rec, out...)
		}
		if err != nil && changed {
			undo() // nobody saw it: the lock is held
		}
		wait = func() error { return err }
	}
	return func() error {
		if err := wait(); err != nil {
			if changed && queued {
				e.undoTally(rec, undo)
			}
			return err
		}
		if changed {
			e.publish(stats, gen)
		}
		if rec.State != from {
			if from == "" { // a new record: every transition is new
				for _, t := range rec.History[:len(rec.History)-1] {
					e.hooks.Transition(rec.Reservation.Type, t.State)
				}
			}
			e.hooks.Transition(rec.Reservation.Type, rec.State)
			switch rec.State {
			case provision.Deployed, provision.Failed, provision.Deleted, provision.Deleting:
				e.sched.WakeDeps()
			}
		}
		if len(out) > 0 {
			e.wakeOutbox()
		}
		return nil
	}
}

// setTally makes the tally count rec (active) or not. e.tallyMu is held.
func (e *Engine) setTally(rec *provision.Record, active bool) {
	if active {
		e.tally.Set(rec.ID(), rec.Reservation.UserID, rec.Reservation.Type, rec.Units)
	} else {
		e.tally.Remove(rec.ID())
	}
}

// undoTally puts the tally back after a queued write of rec, which changed
// the active set, failed, and enqueues fresh stats: writes queued
// meanwhile computed theirs with the failed change.
func (e *Engine) undoTally(rec *provision.Record, undo func()) {
	e.tallyMu.Lock()
	undo()
	stats, gen := e.statsLocked()
	err := e.store.Enqueue(&provision.OutboxEntry{Kind: provision.OutboxStats, Stats: &stats, Created: stats.Updated})
	e.tallyMu.Unlock()
	if err != nil {
		// The next change of the active set, or the next start, enqueues
		// correct stats.
		e.logr(zerolog.ErrorLevel, rec.Reservation).Err(err).Msg("enqueuing stats after a failed write failed")
		return
	}
	e.publish(stats, gen)
	e.wakeOutbox()
}
