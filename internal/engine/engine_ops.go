package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/backoff"
	"github.com/edgeprov/provisiond/internal/sched"
	"github.com/edgeprov/provisiond/provision"
)

// outcome is what an operation asks of the scheduler: nothing (done), or
// running ops again after retry.
type outcome struct {
	retry  time.Duration
	ops    sched.Op
	urgent bool
	deps   bool
}

func (o outcome) merge(p outcome) outcome {
	if p.retry <= 0 {
		return o
	}
	if o.retry <= 0 || p.retry < o.retry {
		o.retry = p.retry
	}
	o.ops |= p.ops
	o.urgent = o.urgent || p.urgent
	o.deps = o.deps || p.deps
	return o
}

// work is one worker of the pool: it runs queued operations until ctx
// ends. Each operation ends once its last write is durable. started is
// this worker's slot of Engine.opStart.
func (e *Engine) work(ctx context.Context, started *atomic.Int64) {
	for {
		id, ops, ok := e.sched.Next(ctx)
		if !ok {
			return
		}
		e.busy.Add(1)
		e.opBegan(started)
		var o outcome
		if ops&sched.Drive != 0 {
			o = o.merge(e.drive(ctx, id))
		}
		if ops&sched.Inspect != 0 {
			o = o.merge(e.inspect(ctx, id))
		}
		if ops&sched.Purge != 0 {
			e.purge(ctx, id)
		}
		e.busy.Add(-1)
		e.opEnded(started)
		if e.sched.Done(id, o.retry, o.ops, o.urgent, o.deps) {
			e.idle()
		}
	}
}

// opBegan and opEnded record a worker's operation for Status: its start in
// the worker's slot, and the time of the latest start or end.
func (e *Engine) opBegan(started *atomic.Int64) {
	now := e.now().UnixNano()
	started.Store(now)
	e.lastOp.Store(now)
}

func (e *Engine) opEnded(started *atomic.Int64) {
	started.Store(0)
	e.lastOp.Store(e.now().UnixNano())
}

// idle tells a store that keeps caches (a Trimmer) that the Engine has
// nothing to run: what served a burst of work need not stay in memory.
func (e *Engine) idle() {
	if t, ok := e.store.(provision.Trimmer); ok {
		t.Trim()
	}
}

// retryLater re-runs the drive of a record after a store error.
func (e *Engine) retryLater(id string, urgent bool, err error) outcome {
	e.log.Error().Err(err).Str("id", id).Str("type", "").Msg("store failed; retrying")
	return outcome{retry: e.backoff.Delay(1), ops: sched.Drive, urgent: urgent}
}

// drive advances the record of id by its state.
func (e *Engine) drive(ctx context.Context, id string) outcome {
	rec, err := e.store.Get(id)
	switch {
	case errors.Is(err, provision.ErrNotFound):
		return outcome{}
	case err != nil:
		return e.retryLater(id, false, err)
	}
	switch rec.State {
	case provision.Accepted:
		return e.start(ctx, rec)
	case provision.Provisioning:
		return e.provision(ctx, rec)
	case provision.Deleting:
		return e.decommission(ctx, rec)
	}
	return outcome{}
}

// reload re-reads the record of id (the record lock is held) and reports
// whether it is still in state want: another writer (a delete, an expiry,
// DecommissionCached) may have moved it while the lock was free.
func (e *Engine) reload(id string, want provision.State) (*provision.Record, bool, error) {
	rec, err := e.store.Get(id)
	if errors.Is(err, provision.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return rec, rec.State == want, nil
}

// fail moves rec to Failed with one signed error result. The record lock
// is held.
func (e *Engine) fail(rec *provision.Record, cause error) error {
	from := rec.State
	msg := cause.Error()
	rec.Move(provision.Failed, e.now(), msg)
	res, err := e.newResult(rec.Reservation, rec.Digest, provision.StateError, msg, nil)
	if err != nil {
		return err
	}
	if err := e.commit(rec, from, res, false); err != nil {
		return fmt.Errorf("failing %s: %w", rec.ID(), err)
	}
	e.logr(zerolog.WarnLevel, rec.Reservation).Err(cause).Msg("reservation failed")
	return nil
}

// start takes an accepted record to provisioning through admission: its
// dependencies must be deployed and its units must fit. Most reservations
// are admitted at ingest already; start takes those that could not be: a
// container whose dependencies were not deployed yet, a record accepted
// while the capacity was unknown, and accepted records found at start.
// The provisioner runs in the next operation on the reservation, queued
// once the state is durable. A request that does not fit fails at once
// (naming the short units), whether it could never fit or only not now:
// there is no queue of requests waiting for capacity.
func (e *Engine) start(ctx context.Context, rec *provision.Record) outcome {
	id := rec.ID()
	mu := e.lock(id)
	mu.Lock()
	cur, ok, err := e.reload(id, provision.Accepted)
	if err != nil || !ok {
		mu.Unlock()
		if err != nil {
			return e.retryLater(id, false, err)
		}
		return outcome{}
	}
	a := e.admission(ctx, cur, provision.Accepted, false)
	switch {
	case a.err != nil:
		mu.Unlock()
		return e.retryLater(id, false, a.err)
	case a.capacityErr != nil:
		mu.Unlock()
		if ctx.Err() != nil {
			return outcome{}
		}
		e.logr(zerolog.WarnLevel, cur.Reservation).Err(a.capacityErr).Msg("reading capacity failed; retrying")
		return outcome{retry: e.backoff.Delay(1), ops: sched.Drive}
	case a.depErr != nil:
		err := e.fail(cur, a.depErr)
		mu.Unlock()
		if err != nil {
			return e.retryLater(id, false, err)
		}
		return outcome{}
	case a.wait > 0:
		mu.Unlock()
		e.logr(zerolog.DebugLevel, cur.Reservation).Dur("recheck", a.wait).Msg("waiting for dependencies")
		return outcome{retry: a.wait, ops: sched.Drive, deps: true}
	}
	err = a.finish()
	mu.Unlock()
	if err != nil {
		return e.retryLater(id, false, err)
	}
	e.admitted(cur, a.refused)
	return outcome{}
}

// onThisNode is where a node's quota refusal says the limit is.
const onThisNode = "on this node"

// admissionResult is what admission decided for a record.
type admissionResult struct {
	// finish waits for the queued write of the admitted or refused record
	// (see commitLocked); nil when nothing was queued.
	finish func() error
	// refused says why the record did not fit (it was written failed,
	// with a signed error result).
	refused error
	// wait is how long the record waits for a dependency not deployed
	// yet (see dependencies); depErr is why a dependency can never
	// qualify.
	wait   time.Duration
	depErr error
	// capacityErr is why the capacity could not be read.
	capacityErr error
	// err is an error of the admission's write: nothing was queued.
	err error
}

// admission is the one path into provisioning, for a record accepted at
// ingest (from "", add) and for one accepted earlier (from Accepted, by
// start). With the record lock of rec held, it checks what rec waits for
// (a container's dependencies, the capacity measure); when nothing, it
// admits rec (see admit). Whatever made rec wait is in the result, and
// nothing was queued then.
func (e *Engine) admission(ctx context.Context, rec *provision.Record, from provision.State, add bool) admissionResult {
	if rec.Reservation.Type == provision.ContainerReservation {
		wait, err := e.dependencies(rec)
		if err != nil || wait > 0 {
			return admissionResult{wait: wait, depErr: err}
		}
	}
	capacity, err := e.currentCapacity(ctx)
	if err != nil {
		return admissionResult{capacityErr: err}
	}
	finish, refused, err := e.admit(rec, from, add, capacity)
	return admissionResult{finish: finish, refused: refused, err: err}
}

// admit checks that rec, accepted, fits its owner's quota (see
// provision.Quota.Check) beside what the tally counts for the owner, and
// the node's usable capacity beside what the tally counts in all. If it
// does, rec moves to provisioning; else to failed, with a signed error
// result naming the limit: the user's quota (provision.ErrQuota), else the
// short units (provision.ErrNoCapacity). Both refusals are permanent:
// there is no queue of requests waiting for capacity, and a quota only
// changes when the operator changes it (SetQuotas), so the owner must
// delete a workload, or ask the operator, and reserve again. The tally
// is charged and the write of rec (an Add when add is set, else a Save
// from state from) queued under the tally lock, so two reservations can
// never both take the last free units or the last of a user's quota. It
// returns the write's finish (see commitLocked) and, when rec was refused,
// why. On an error nothing was queued and the tally is unchanged.
func (e *Engine) admit(rec *provision.Record, from provision.State, add bool, capacity provision.Capacity) (finish func() error, refused, err error) {
	e.tallyMu.Lock()
	defer e.tallyMu.Unlock()
	user := rec.Reservation.UserID
	quota := e.quotas.For(user)
	if p := rec.Prior; p != nil && from.Active() {
		// An update: its units replace the prior version's, which the
		// tally counts (in the total and in the owner's usage), and the
		// number of workloads stays. A refusal writes nothing; the prior
		// version runs on.
		used := e.tally.User(user)
		used.Units = used.Units.Sub(p.Units)
		if refused = quota.Check(user, used, rec.Units, 0, onThisNode); refused != nil {
			return nil, refused, nil
		}
		if refused = capacity.Admit(e.tally.Total().Sub(p.Units), rec.Units); refused != nil {
			return nil, refused, nil
		}
		rec.Move(provision.Provisioning, e.now(), fmt.Sprintf("updating from version %d to %d", p.Reservation.Version, rec.Reservation.Version))
		return e.commitWith(rec, from, nil, add, &p.Units), nil, nil
	}
	refused = quota.Check(user, e.tally.User(user), rec.Units, 1, onThisNode)
	if refused == nil {
		refused = capacity.Admit(e.tally.Total(), rec.Units)
	}
	if refused == nil {
		rec.Move(provision.Provisioning, e.now(), "")
		return e.commitLocked(rec, from, nil, add), nil, nil
	}
	res, err := e.newResult(rec.Reservation, rec.Digest, provision.StateError, refused.Error(), nil)
	if err != nil {
		return nil, nil, err
	}
	rec.Move(provision.Failed, e.now(), refused.Error())
	return e.commitLocked(rec, from, res, add), refused, nil
}

// admitted follows the durable write of an admission of rec: a refusal is
// logged; an admitted reservation may now be provisioned, in its next
// turn (the state is written before the side effect).
func (e *Engine) admitted(rec *provision.Record, refused error) {
	if refused != nil {
		e.logr(zerolog.WarnLevel, rec.Reservation).Err(refused).Msg("reservation refused for quota or capacity")
		return
	}
	e.sched.Request(rec.ID(), sched.Drive, false)
}

// currentCapacity returns the node's capacity as last measured (at start
// and every ResyncInterval), measuring it when no measurement succeeded
// yet.
func (e *Engine) currentCapacity(ctx context.Context) (provision.Capacity, error) {
	e.tallyMu.Lock()
	c, ok := e.capacity, e.capacityOK
	e.tallyMu.Unlock()
	if ok {
		return c, nil
	}
	return e.refreshCapacity(ctx)
}

// refreshCapacity measures the node's capacity and keeps it for admission
// and stats.
func (e *Engine) refreshCapacity(ctx context.Context) (provision.Capacity, error) {
	c, err := e.statser.Capacity(ctx)
	if err != nil {
		return provision.Capacity{}, fmt.Errorf("reading capacity: %w", err)
	}
	e.tallyMu.Lock()
	e.capacity, e.capacityOK = c, true
	e.tallyMu.Unlock()
	return c, nil
}

// dependencies checks the network and volumes a container names: they
// must be records of the same user, of the right type, deployed. It
// returns a permanent error when one failed or can never qualify, a wait
// (the time left to DependencyTimeout, counted from acceptance) when one
// is not deployed yet, or zero and nil when all are ready.
func (e *Engine) dependencies(rec *provision.Record) (time.Duration, error) {
	w, err := rec.Reservation.Workload()
	if err != nil {
		return 0, provision.Permanent(err)
	}
	c := w.(*provision.Container)
	volumes, netID := c.Dependencies()
	user := rec.Reservation.UserID
	var pending []string
	check := func(what, id string, typ provision.ReservationType) error {
		dep, err := e.store.Get(id)
		switch {
		case errors.Is(err, provision.ErrNotFound):
			pending = append(pending, what)
			return nil
		case err != nil:
			return fmt.Errorf("reading %s: %w", what, err)
		case dep.Reservation.UserID != user:
			return provision.Permanentf("%w: %s belongs to another user", provision.ErrBadField, what)
		case dep.Reservation.Type != typ:
			return provision.Permanentf("%w: %s is a %s, not a %s", provision.ErrBadField, what, dep.Reservation.Type, typ)
		case dep.State == provision.Deployed:
			return nil
		case dep.State == provision.Accepted || dep.State == provision.Provisioning:
			pending = append(pending, what)
			return nil
		}
		return provision.Permanentf("%w: %s is %s", provision.ErrBadField, what, dep.State)
	}
	if netID != "" {
		owner, err := e.store.Owner(netID)
		switch {
		case errors.Is(err, provision.ErrNotFound):
			pending = append(pending, "network "+netID)
		case err != nil:
			return e.backoff.Delay(1), nil
		default:
			if err := check("network "+netID, owner, provision.NetworkReservation); err != nil {
				return depErr(err, e.backoff)
			}
		}
	}
	for _, v := range volumes {
		if err := check("volume "+v, v, provision.VolumeReservation); err != nil {
			return depErr(err, e.backoff)
		}
	}
	if len(pending) == 0 {
		return 0, nil
	}
	left := acceptedAt(rec).Add(e.depTimeout).Sub(e.now())
	if left <= 0 {
		return 0, provision.Permanentf("%w: %s not deployed within %s", provision.ErrBadField, strings.Join(pending, ", "), e.depTimeout)
	}
	return left, nil
}

// depErr turns a store error met while checking dependencies into a
// retry, and passes a refusal on.
func depErr(err error, b backoff.Policy) (time.Duration, error) {
	if provision.IsTemporary(err) {
		return b.Delay(1), nil
	}
	return 0, err
}

// acceptedAt returns when rec was accepted (its last accepted transition).
func acceptedAt(rec *provision.Record) time.Time {
	for i := len(rec.History) - 1; i >= 0; i-- {
		if rec.History[i].State == provision.Accepted {
			return rec.History[i].At
		}
	}
	return rec.Updated
}

// call runs a primitive operation under OpTimeout and reports it to Hooks.
func (e *Engine) call(ctx context.Context, r *provision.Reservation, op string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, e.opTimeout)
	defer cancel()
	began := e.now()
	err := fn(ctx)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = provision.Temporary(fmt.Errorf("%s timed out after %s: %w", op, e.opTimeout, err))
	}
	e.hooks.Operation(r.Type, op, e.now().Sub(began), err)
	return err
}

// provision runs the provisioner of a record in state provisioning and
// writes the outcome: deployed with an ok result, a retry with backoff
// (attempts persisted) for a temporary error, or failed with one error
// result (and its leftovers removed) for a permanent error or when
// MaxAttempts is used up.
func (e *Engine) provision(ctx context.Context, rec *provision.Record) outcome {
	id, r := rec.ID(), rec.Reservation
	var data any
	err := e.call(ctx, r, "provision", func(ctx context.Context) error {
		var err error
		data, err = e.prims.Provision(ctx, r)
		return err
	})
	if err != nil && ctx.Err() != nil {
		return outcome{} // shutting down: recovery runs it again
	}
	o, failed := e.settle(id, data, err)
	if failed != nil {
		e.purgeRecord(ctx, failed)
	}
	return o
}

// settle writes the outcome of a provision call under the record lock,
// and returns once it is durable. It returns the record when it failed,
// for its leftovers to be purged.
func (e *Engine) settle(id string, data any, err error) (outcome, *provision.Record) {
	mu := e.lock(id)
	mu.Lock()
	defer mu.Unlock()
	cur, ok, lerr := e.reload(id, provision.Provisioning)
	switch {
	case lerr != nil:
		return e.retryLater(id, false, lerr), nil
	case !ok:
		return outcome{}, nil // deleted or given up meanwhile; its own operation follows
	}
	r := cur.Reservation
	if err == nil && cur.Restoring {
		// Back at the version a rolled-back update replaced: its ok
		// result holds (the explorer shows the failed version's error).
		cur.Move(provision.Deployed, e.now(), "restored after a failed update")
		cur.Failures, cur.Restoring = 0, false
		if cerr := e.commit(cur, provision.Provisioning, nil, false); cerr != nil {
			return e.retryLater(id, false, cerr), nil
		}
		e.logr(zerolog.InfoLevel, r).Uint32("version", r.Version).Msg("reservation restored after a failed update")
		return outcome{}, nil
	}
	if err == nil {
		res, rerr := e.newResult(r, cur.Digest, provision.StateOk, "", data)
		switch {
		case rerr != nil && provision.IsTemporary(rerr):
			return e.retryLater(id, false, rerr), nil
		case rerr != nil:
			err = rerr // data that cannot be encoded: fail below
		default:
			updated := cur.Prior != nil
			cur.Move(provision.Deployed, e.now(), "")
			cur.Failures, cur.Prior, cur.Restoring = 0, nil, false
			if updated {
				cur.FailedUpdate = nil
			}
			if cerr := e.commit(cur, provision.Provisioning, res, false); cerr != nil {
				return e.retryLater(id, false, cerr), nil
			}
			if updated {
				e.logr(zerolog.InfoLevel, r).Uint32("version", r.Version).Msg("reservation updated")
				return outcome{}, nil
			}
			e.logr(zerolog.InfoLevel, r).Msg("reservation deployed")
			return outcome{}, nil
		}
	}
	if provision.IsTemporary(err) && cur.Attempts+1 < e.maxAttempts {
		cur.Move(provision.Provisioning, e.now(), err.Error())
		cur.Attempts++
		if cerr := e.commit(cur, provision.Provisioning, nil, false); cerr != nil {
			return e.retryLater(id, false, cerr), nil
		}
		wait := e.backoff.Delay(cur.Attempts)
		e.logr(zerolog.WarnLevel, r).Err(err).Int("attempt", cur.Attempts).Dur("retry_in", wait).Msg("provision failed; retrying")
		return outcome{retry: wait, ops: sched.Drive}, nil
	}
	if provision.IsTemporary(err) {
		err = fmt.Errorf("giving up after %d attempts: %w", cur.Attempts+1, err)
	}
	if cur.Prior != nil {
		if rerr := e.rollback(cur, err); rerr != nil {
			return e.retryLater(id, false, rerr), nil
		}
		return outcome{}, nil
	}
	if ferr := e.fail(cur, err); ferr != nil {
		return e.retryLater(id, false, ferr), nil
	}
	return outcome{}, cur
}

// decommission runs the decommissioner of a record in state deleting and
// writes deleted with a signed "deleted" result. A failure keeps the
// record in deleting and retries with capped backoff, forever: a workload
// is never forgotten while it may still exist.
func (e *Engine) decommission(ctx context.Context, rec *provision.Record) outcome {
	id, r := rec.ID(), rec.Reservation
	err := e.call(ctx, r, "decommission", func(ctx context.Context) error {
		return e.prims.Decommission(ctx, r)
	})
	if err != nil && ctx.Err() != nil {
		return outcome{} // shutting down: recovery runs it again
	}
	mu := e.lock(id)
	mu.Lock()
	defer mu.Unlock()
	cur, ok, lerr := e.reload(id, provision.Deleting)
	switch {
	case lerr != nil:
		return e.retryLater(id, true, lerr)
	case !ok:
		return outcome{}
	}
	if err != nil {
		cur.Attempts++
		cur.Updated = e.now()
		noteWait(cur, err)
		if cerr := e.commit(cur, provision.Deleting, nil, false); cerr != nil {
			return e.retryLater(id, true, cerr)
		}
		wait := e.backoff.Delay(cur.Attempts)
		e.logr(zerolog.ErrorLevel, r).Err(err).Int("attempt", cur.Attempts).Dur("retry_in", wait).Msg("decommission failed; retrying")
		return outcome{retry: wait, ops: sched.Drive, urgent: true}
	}
	reason := ""
	if n := len(cur.History); n > 0 {
		reason = cur.History[n-1].Message
	}
	cur.Move(provision.Deleted, e.now(), reason)
	as, digest := deletedAs(cur)
	res, err := e.newResult(as, digest, provision.StateDeleted, reason, nil)
	if err != nil {
		return e.retryLater(id, true, err)
	}
	if err := e.commit(cur, provision.Deleting, res, false); err != nil {
		return e.retryLater(id, true, err)
	}
	e.logr(zerolog.InfoLevel, r).Str("reason", reason).Msg("reservation decommissioned")
	return outcome{}
}

// purge removes the leftovers of a failed record, best effort.
func (e *Engine) purge(ctx context.Context, id string) {
	rec, err := e.store.Get(id)
	if err != nil {
		e.log.Warn().Err(err).Str("id", id).Str("type", "").Msg("reading failed record for purge")
		return
	}
	if rec.State == provision.Failed {
		e.purgeRecord(ctx, rec)
	}
}

// purgeRecord decommissions what a failed reservation may have left, once
// and best effort: what remains is an orphan that CleanupResources removes
// after the next catch-up. A network whose ID another live record took is
// not touched.
func (e *Engine) purgeRecord(ctx context.Context, rec *provision.Record) {
	if rec.Key != "" {
		if _, err := e.store.Owner(rec.Key); !errors.Is(err, provision.ErrNotFound) {
			e.logr(zerolog.InfoLevel, rec.Reservation).Err(err).Msg("leftovers not purged: the key is held or unknown")
			return
		}
	}
	err := e.call(ctx, rec.Reservation, "decommission", func(ctx context.Context) error {
		return e.prims.Decommission(ctx, rec.Reservation)
	})
	if err != nil && ctx.Err() == nil {
		e.logr(zerolog.WarnLevel, rec.Reservation).Err(err).Msg("purging leftovers of a failed reservation failed; cleanup will retry")
	}
}

// DecommissionCached gives up on a workload: a primitive calls it when the
// workload cannot be kept (a crash-looping container). The record becomes
// failed with one signed error result carrying reason, and its resources
// are removed. A record already failed, deleting or deleted is left
// alone. It fails with ErrNotFound for an unknown id.
func (e *Engine) DecommissionCached(ctx context.Context, id, reason string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	mu := e.lock(id)
	mu.Lock()
	rec, err := e.store.Get(id)
	if err != nil {
		mu.Unlock()
		return fmt.Errorf("decommissioning %s: %w", id, err)
	}
	switch rec.State {
	case provision.Accepted, provision.Provisioning, provision.Deployed:
	default:
		mu.Unlock()
		return nil
	}
	err = e.fail(rec, provision.Permanent(errors.New(reason)))
	mu.Unlock()
	if err != nil {
		return err
	}
	e.sched.Request(id, sched.Purge, true)
	return nil
}

// waitedPrefix starts the part of a deleting transition's message that
// says why the decommission waited.
const waitedPrefix = "; waited: "

// noteWait records in cur (deleting) why its decommission waits, once:
// the deleting transition's message gets "; waited: <err>", which the
// deleted result then carries.
func noteWait(cur *provision.Record, err error) {
	if !errors.Is(err, provision.ErrInUse) {
		return
	}
	n := len(cur.History)
	if n == 0 || strings.Contains(cur.History[n-1].Message, waitedPrefix) {
		return
	}
	last := cur.History[n-1]
	cur.Move(provision.Deleting, cur.Updated, last.Message+waitedPrefix+provision.Truncate(err.Error(), provision.MaxMessageLength/2))
}
