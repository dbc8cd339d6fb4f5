package provision

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgeprov/provisiond/internal/sched"
	"github.com/rs/zerolog"
)

// ingest handles one job of the source and returns nil once its outcome is
// durable (a record written, a result enqueued): the source may then
// forget it. A non-nil error means nothing was decided; the source delivers
// the job again.
//
// The answers:
//   - a bad item (job.Err) or an invalid reservation with an unknown ID gets
//     a signed error result. When its ID is a safe name it is also recorded
//     as Failed, without a digest (so that its content stays free for a
//     valid submission under another ID), and a repeat re-sends that same
//     result. An item without an ID cannot be answered; it is logged.
//   - a known ID with the same digest re-sends the stored result and touches
//     nothing else; a valid owner-signed delete moves it to deleting.
//   - a known ID with another digest (the explorer reused an ID, or the
//     content was changed) gets an error result for that digest; the record
//     is not touched. Updates are not supported: delete and submit anew.
//   - a bad item, an invalid delete or garbage for a known ID re-sends the
//     stored result (what is true on this node) and logs the refusal.
//   - a valid new reservation is recorded as accepted (refused when its
//     digest was seen under another ID, or when a live network holds its
//     name) and queued. When it can start at once it is admitted in the
//     same write (see accept): it is recorded as provisioning, or as
//     failed with a signed error result when it does not fit.
//   - a valid delete of an unknown ID is recorded as deleted (its digest
//     taken, so the content cannot be replayed) and answered "deleted".
func (e *Engine) ingest(ctx context.Context, job ReservationJob) error {
	r := job.Reservation
	switch {
	case r == nil:
		if job.Err != nil {
			e.log.Error().Err(job.Err).Str("id", "").Str("type", "").Msg("unanswerable item without a reservation")
		}
		return nil
	case job.Expired:
		return e.expire(r.ID)
	}
	mu := e.lock(r.ID)
	mu.Lock()
	defer mu.Unlock()
	if r.ID != "" {
		rec, err := e.store.Get(r.ID)
		switch {
		case err == nil:
			return e.repeat(rec, job)
		case !errors.Is(err, ErrNotFound):
			return fmt.Errorf("ingesting %s: %w", r.ID, err)
		}
	}
	digest := r.Digest()
	if job.Err != nil {
		return e.refuse(r, digest, Permanent(job.Err))
	}
	now := e.now()
	if err := Validate(r, e.nodeID, now); err != nil {
		return e.refuse(r, digest, err)
	}
	if r.ToDelete {
		rec := &Record{Reservation: stripped(r), Digest: digest}
		rec.Move(Deleted, now, "deleted by owner before it was provisioned")
		res, err := e.newResult(r, digest, StateDeleted, "", nil)
		if err != nil {
			return err
		}
		if err := e.commit(rec, "", res, true); err != nil {
			if errors.Is(err, ErrReplay) {
				return e.refuse(r, digest, Permanent(err))
			}
			return fmt.Errorf("recording delete of %s: %w", r.ID, err)
		}
		e.logr(zerolog.InfoLevel, r).Msg("delete of an unknown reservation recorded")
		return nil
	}
	units, err := e.statser.Units(r)
	if err != nil {
		if IsTemporary(err) {
			return fmt.Errorf("pricing %s: %w", r.ID, err)
		}
		return e.refuse(r, digest, err)
	}
	rec := &Record{Reservation: stripped(r), Digest: digest, Units: units}
	var netName string
	if r.Type == NetworkReservation {
		w, _ := r.Workload() // Validate decoded it already
		netName = w.(*Network).Name
		rec.Key = NetworkID(r.UserID, netName)
	}
	rec.Move(Accepted, now, "")
	finish, refused, err := e.accept(ctx, rec)
	if err != nil {
		return fmt.Errorf("accepting %s: %w", r.ID, err)
	}
	switch err := finish(); {
	case errors.Is(err, ErrReplay):
		return e.refuse(r, digest, Permanent(fmt.Errorf("%w: digest %s", ErrReplay, digest)))
	case errors.Is(err, ErrConflict) && rec.Key != "":
		return e.refuse(r, digest, Permanentf("%w: network name %q in use", ErrConflict, netName))
	case err != nil:
		return fmt.Errorf("accepting %s: %w", r.ID, err)
	}
	e.logr(zerolog.DebugLevel, r).Str("state", string(rec.State)).Msg("reservation accepted")
	e.admitted(rec, refused)
	return nil
}

// accept queues the first write of rec, accepted. A reservation that can
// start at once (anything but a container whose dependencies are not all
// deployed, while the capacity is known) is admitted in the same write,
// entering provisioning or failed (see admit): that spares a worker a
// write and two reads per reservation. Others are written accepted, for
// start. So are all with a store that cannot queue writes (not a
// WriteQueuer): admission holds the tally lock, which must not wait for a
// commit, or one slow write would hold up every ingest. The record lock is
// held.
func (e *Engine) accept(ctx context.Context, rec *Record) (finish func() error, refused, err error) {
	_, ready := e.store.(WriteQueuer)
	if ready && rec.Reservation.Type == ContainerReservation {
		wait, derr := e.dependencies(rec)
		ready = derr == nil && wait == 0
	}
	if ready {
		if capacity, cerr := e.currentCapacity(ctx); cerr == nil {
			return e.admit(rec, "", true, capacity)
		}
	}
	return e.commitQueued(rec, "", nil, true), nil, nil
}

// provisioned reports whether a side effect may have happened for rec: it
// was ever provisioning (the state is written before the side effect).
func provisioned(rec *Record) bool {
	for _, t := range rec.History {
		if t.State == Provisioning || t.State == Deployed || t.State == Deleting {
			return true
		}
	}
	return false
}

// stripped returns a copy of r without the explorer's copy of a result.
func stripped(r *Reservation) *Reservation {
	c := *r
	c.Result = nil
	return &c
}

// storedDigest returns the digest a record answers: its own, or for a
// record refused at ingest (kept without digest) that of its result.
func storedDigest(rec *Record) string {
	if rec.Digest == "" && rec.Result != nil {
		return rec.Result.Digest
	}
	return rec.Digest
}

// refuse answers a new item with a signed error result, recorded as a
// Failed record when its ID is a safe name. The record lock of r.ID is held.
func (e *Engine) refuse(r *Reservation, digest string, cause error) error {
	e.logr(zerolog.WarnLevel, r).Err(cause).Msg("reservation refused")
	if r.ID == "" {
		e.logr(zerolog.ErrorLevel, r).Msg("refused item has no id; no result can be sent")
		return nil
	}
	msg := Truncate(cause.Error(), MaxMessageLength)
	if ValidName("reservation id", r.ID) != nil && len(r.ID) > MaxRefusedField {
		e.logr(zerolog.ErrorLevel, r).Int("id_bytes", len(r.ID)).Msg("refused item's id is too long to answer; no result is sent")
		return nil
	}
	res, err := e.newResult(r, digest, StateError, msg, nil)
	if err != nil {
		return err
	}
	if ValidName("reservation id", r.ID) != nil {
		if dup, err := e.pendingResult(res); err != nil || dup {
			return err // the same refusal waits already
		}
		if err := e.store.Enqueue(resultEntry(res)); err != nil {
			return fmt.Errorf("enqueuing refusal of %s: %w", r.ID, err)
		}
		e.wakeOutbox()
		return nil
	}
	c := boundedRefusal(r)
	rec := &Record{Reservation: c}
	rec.Move(Failed, e.now(), msg)
	if err := e.commit(rec, "", res, true); err != nil {
		return fmt.Errorf("recording refusal of %s: %w", r.ID, err)
	}
	return nil
}

// repeat handles a job for a known ID. The record lock is held.
func (e *Engine) repeat(rec *Record, job ReservationJob) error {
	r := job.Reservation
	digest := r.Digest()
	switch {
	case job.Err != nil:
		e.logr(zerolog.WarnLevel, r).Err(job.Err).Msg("bad item for a known reservation; re-sending its result")
		return e.resend(rec)
	case digest != storedDigest(rec):
		return e.refuseOther(r, digest)
	case !r.ToDelete || rec.State == Deleting || rec.State == Deleted:
		return e.resend(rec)
	}
	if err := Validate(r, e.nodeID, e.now()); err != nil {
		e.logr(zerolog.WarnLevel, r).Err(err).Msg("delete refused; re-sending the current result")
		return e.resend(rec)
	}
	rec.Reservation.ToDelete = true
	rec.Reservation.DeleteSignature = r.DeleteSignature
	return e.markDeleting(rec, "deleted by owner")
}

// refuseOther answers different content under a known ID with an error
// result for that content, leaving the record alone.
func (e *Engine) refuseOther(r *Reservation, digest string) error {
	cause := fmt.Errorf("%w: id %s already holds another reservation", ErrConflict, r.ID)
	e.logr(zerolog.WarnLevel, r).Err(cause).Str("digest", digest).Msg("reservation refused")
	res, err := e.newResult(r, digest, StateError, cause.Error(), nil)
	if err != nil {
		return err
	}
	if err := e.store.Enqueue(resultEntry(res)); err != nil {
		return fmt.Errorf("enqueuing refusal of %s: %w", r.ID, err)
	}
	e.wakeOutbox()
	return nil
}

// resend enqueues the stored result of rec again; a record without a
// result yet (accepted, provisioning) will send one when it gets there.
func (e *Engine) resend(rec *Record) error {
	if rec.Result == nil {
		return nil
	}
	if dup, err := e.pendingResult(rec.Result); err != nil || dup {
		return err // it waits in the outbox already: a repeat adds nothing
	}
	if err := e.store.Enqueue(resultEntry(rec.Result)); err != nil {
		return fmt.Errorf("re-sending result of %s: %w", rec.ID(), err)
	}
	e.wakeOutbox()
	return nil
}

// expire starts the decommission of an expired reservation. Stale jobs (a
// record already final, or not expired) are ignored.
func (e *Engine) expire(id string) error {
	mu := e.lock(id)
	mu.Lock()
	defer mu.Unlock()
	rec, err := e.store.Get(id)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("expiring %s: %w", id, err)
	case rec.State.Final() || e.now().Before(rec.Reservation.Expires()):
		return nil // stale; the store's expiry index counts "at or before now"
	}
	return e.markDeleting(rec, "expired")
}

// markDeleting durably starts the removal of rec with the given reason:
// an accepted record (nothing provisioned yet) becomes deleted at once,
// others enter deleting and are queued urgently. A worker that is
// provisioning it meanwhile finds the state changed and leaves it; the
// decommission runs after it. The record lock is held.
func (e *Engine) markDeleting(rec *Record, reason string) error {
	from := rec.State
	switch {
	case from == Accepted, from == Failed && !provisioned(rec):
		return e.deleteNow(rec, reason)
	case from == Deleting:
		e.sched.Request(rec.ID(), sched.Drive, true)
		return nil
	case from == Deleted:
		return nil
	}
	prev := *rec
	rec.Move(Deleting, e.now(), reason)
	err := e.commit(rec, from, nil, false)
	if errors.Is(err, ErrConflict) && from == Failed {
		// A failed network whose name another live record took since:
		// the namespace is that record's now, nothing may be removed.
		return e.deleteNow(&prev, reason)
	}
	if err != nil {
		return fmt.Errorf("deleting %s: %w", rec.ID(), err)
	}
	e.logr(zerolog.InfoLevel, rec.Reservation).Str("reason", reason).Msg("decommission scheduled")
	e.sched.Request(rec.ID(), sched.Drive, true)
	return nil
}

// deleteNow moves a record that holds nothing on the node straight to
// deleted with a signed "deleted" result. The record lock is held.
func (e *Engine) deleteNow(rec *Record, reason string) error {
	from := rec.State
	rec.Move(Deleted, e.now(), reason)
	res, err := e.newResult(rec.Reservation, storedDigest(rec), StateDeleted, reason, nil)
	if err != nil {
		return err
	}
	if err := e.commit(rec, from, res, false); err != nil {
		return fmt.Errorf("deleting %s: %w", rec.ID(), err)
	}
	e.logr(zerolog.InfoLevel, rec.Reservation).Str("reason", reason).Msg("reservation deleted; nothing was provisioned")
	return nil
}
