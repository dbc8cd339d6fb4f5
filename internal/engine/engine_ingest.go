package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/sched"
	"github.com/edgeprov/provisiond/provision"
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
//   - a known ID with another digest and another version is an update (see
//     update): applied when it is the owner's valid next version of a
//     deployed record and fits, else refused with an error result for its
//     digest, the record untouched (the current version keeps running).
//   - a known ID with another digest at the same version (the explorer
//     reused an ID) gets an error result for that digest; the record is
//     not touched.
//   - a bad item, an invalid delete or garbage for a known ID re-sends the
//     stored result (what is true on this node) and logs the refusal.
//   - a valid new reservation is recorded as accepted (refused when its
//     digest was seen under another ID, or when a live network holds its
//     name) and queued. When it can start at once it is admitted in the
//     same write (see accept, admission): it is recorded as provisioning, or as
//     failed with a signed error result when it does not fit.
//   - a valid delete of an unknown ID is recorded as deleted (its digest
//     taken, so the content cannot be replayed) and answered "deleted".
func (e *Engine) ingest(ctx context.Context, job provision.ReservationJob) error {
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
			return e.repeat(ctx, rec, job)
		case !errors.Is(err, provision.ErrNotFound):
			return fmt.Errorf("ingesting %s: %w", r.ID, err)
		}
	}
	digest := r.Digest()
	if job.Err != nil {
		return e.refuse(r, digest, provision.Permanent(job.Err))
	}
	now := e.now()
	if err := provision.Validate(r, e.nodeID, now); err != nil {
		return e.refuse(r, digest, err)
	}
	if r.ToDelete {
		rec := &provision.Record{Reservation: stripped(r), Digest: digest}
		rec.Move(provision.Deleted, now, "deleted by owner before it was provisioned")
		res, err := e.newResult(r, digest, provision.StateDeleted, "", nil)
		if err != nil {
			return err
		}
		if err := e.commit(rec, "", res, true); err != nil {
			if errors.Is(err, provision.ErrReplay) {
				return e.refuse(r, digest, provision.Permanent(err))
			}
			return fmt.Errorf("recording delete of %s: %w", r.ID, err)
		}
		e.logr(zerolog.InfoLevel, r).Msg("delete of an unknown reservation recorded")
		return nil
	}
	units, err := e.statser.Units(r)
	if err != nil {
		if provision.IsTemporary(err) {
			return fmt.Errorf("pricing %s: %w", r.ID, err)
		}
		return e.refuse(r, digest, err)
	}
	rec := &provision.Record{Reservation: stripped(r), Digest: digest, Units: units}
	var netName string
	if r.Type == provision.NetworkReservation {
		w, _ := r.Workload() // Validate decoded it already
		netName = w.(*provision.Network).Name
		rec.Key = provision.NetworkID(r.UserID, netName)
	}
	rec.Move(provision.Accepted, now, "")
	finish, refused, err := e.accept(ctx, rec)
	if err != nil {
		return fmt.Errorf("accepting %s: %w", r.ID, err)
	}
	switch err := finish(); {
	case errors.Is(err, provision.ErrReplay):
		return e.refuse(r, digest, provision.Permanent(fmt.Errorf("%w: digest %s", provision.ErrReplay, digest)))
	case errors.Is(err, provision.ErrConflict) && rec.Key != "":
		return e.refuse(r, digest, provision.Permanentf("%w: network name %q in use", provision.ErrConflict, netName))
	case err != nil:
		return fmt.Errorf("accepting %s: %w", r.ID, err)
	}
	e.logr(zerolog.DebugLevel, r).Str("state", string(rec.State)).Msg("reservation accepted")
	e.admitted(rec, refused)
	return nil
}

// accept queues the first write of rec, accepted. A reservation that can
// start at once (anything but a container whose dependencies are not all
// deployed, while the capacity is known) goes through admission in the
// same write, entering provisioning or failed: that spares a worker a
// write and two reads per reservation. Others are written accepted, for
// start, which runs the same admission later. So are all with a store
// that cannot queue writes (not a WriteQueuer): admission holds the tally
// lock, which must not wait for a commit, or one slow write would hold up
// every ingest. The record lock is held.
func (e *Engine) accept(ctx context.Context, rec *provision.Record) (finish func() error, refused, err error) {
	if _, ok := e.store.(provision.WriteQueuer); ok {
		a := e.admission(ctx, rec, "", true)
		if a.finish != nil || a.err != nil {
			return a.finish, a.refused, a.err
		}
	}
	return e.commitQueued(rec, "", nil, true), nil, nil
}

// provisioned reports whether a side effect may have happened for rec: it
// was ever provisioning (the state is written before the side effect).
func provisioned(rec *provision.Record) bool {
	for _, t := range rec.History {
		if t.State == provision.Provisioning || t.State == provision.Deployed || t.State == provision.Deleting {
			return true
		}
	}
	return false
}

// stripped returns a copy of r without the explorer's copy of a result.
func stripped(r *provision.Reservation) *provision.Reservation {
	c := *r
	c.Result = nil
	return &c
}

// storedDigest returns the digest a record answers: its own, or for a
// record refused at ingest (kept without digest) that of its result.
func storedDigest(rec *provision.Record) string {
	if rec.Digest == "" && rec.Result != nil {
		return rec.Result.Digest
	}
	return rec.Digest
}

// refuse answers a new item with a signed error result, recorded as a
// Failed record when its ID is a safe name. The record lock of r.ID is held.
func (e *Engine) refuse(r *provision.Reservation, digest string, cause error) error {
	e.logr(zerolog.WarnLevel, r).Err(cause).Msg("reservation refused")
	if r.ID == "" {
		e.logr(zerolog.ErrorLevel, r).Msg("refused item has no id; no result can be sent")
		return nil
	}
	msg := provision.Truncate(cause.Error(), provision.MaxMessageLength)
	if provision.ValidName("reservation id", r.ID) != nil && len(r.ID) > provision.MaxRefusedField {
		e.logr(zerolog.ErrorLevel, r).Int("id_bytes", len(r.ID)).Msg("refused item's id is too long to answer; no result is sent")
		return nil
	}
	res, err := e.newResult(r, digest, provision.StateError, msg, nil)
	if err != nil {
		return err
	}
	if provision.ValidName("reservation id", r.ID) != nil {
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
	rec := &provision.Record{Reservation: c}
	rec.Move(provision.Failed, e.now(), msg)
	if err := e.commit(rec, "", res, true); err != nil {
		return fmt.Errorf("recording refusal of %s: %w", r.ID, err)
	}
	return nil
}

// repeat handles a job for a known ID. The record lock is held.
func (e *Engine) repeat(ctx context.Context, rec *provision.Record, job provision.ReservationJob) error {
	r := job.Reservation
	digest := r.Digest()
	switch {
	case job.Err != nil:
		e.logr(zerolog.WarnLevel, r).Err(job.Err).Msg("bad item for a known reservation; re-sending its result")
		return e.resend(rec)
	case digest != storedDigest(rec) && rec.Digest != "" && r.ToDelete && r.UserID == rec.Reservation.UserID:
		// The owner deletes another version of the reservation (the one
		// the explorer holds: an update refused or rolled back here).
		return e.deleteVersion(rec, r)
	case digest != storedDigest(rec) && rec.Digest != "" && (r.IsUpdate() || r.Version != rec.Reservation.Version):
		return e.update(ctx, rec, r, digest)
	case digest != storedDigest(rec):
		return e.refuseOther(r, digest)
	case !r.ToDelete || rec.State == provision.Deleting || rec.State == provision.Deleted:
		return e.resend(rec)
	}
	if err := provision.Validate(r, e.nodeID, e.now()); err != nil {
		e.logr(zerolog.WarnLevel, r).Err(err).Msg("delete refused; re-sending the current result")
		return e.resend(rec)
	}
	rec.Reservation.ToDelete = true
	rec.Reservation.DeleteSignature = r.DeleteSignature
	return e.markDeleting(rec, "deleted by owner")
}

// refuseOther answers different content under a known ID with an error
// result for that content, leaving the record alone.
func (e *Engine) refuseOther(r *provision.Reservation, digest string) error {
	cause := fmt.Errorf("%w: id %s already holds another reservation", provision.ErrConflict, r.ID)
	e.logr(zerolog.WarnLevel, r).Err(cause).Str("digest", digest).Msg("reservation refused")
	res, err := e.newResult(r, digest, provision.StateError, cause.Error(), nil)
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
func (e *Engine) resend(rec *provision.Record) error {
	return e.resendResult(rec.Result)
}

// resendResult enqueues res again unless it is nil or waits in the outbox
// already.
func (e *Engine) resendResult(res *provision.Result) error {
	if res == nil {
		return nil
	}
	if dup, err := e.pendingResult(res); err != nil || dup {
		return err // it waits in the outbox already: a repeat adds nothing
	}
	if err := e.store.Enqueue(resultEntry(res)); err != nil {
		return fmt.Errorf("re-sending result of %s: %w", res.ID, err)
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
	case errors.Is(err, provision.ErrNotFound):
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
func (e *Engine) markDeleting(rec *provision.Record, reason string) error {
	from := rec.State
	switch {
	case from == provision.Accepted, from == provision.Failed && !provisioned(rec):
		return e.deleteNow(rec, reason)
	case from == provision.Deleting:
		e.sched.Request(rec.ID(), sched.Drive, true)
		return nil
	case from == provision.Deleted:
		return nil
	}
	prev := *rec
	rec.Prior = nil // a delete during an update removes whichever version is there
	rec.Move(provision.Deleting, e.now(), reason)
	err := e.commit(rec, from, nil, false)
	if errors.Is(err, provision.ErrConflict) && from == provision.Failed {
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
func (e *Engine) deleteNow(rec *provision.Record, reason string) error {
	from := rec.State
	rec.Move(provision.Deleted, e.now(), reason)
	as, digest := deletedAs(rec)
	res, err := e.newResult(as, digest, provision.StateDeleted, reason, nil)
	if err != nil {
		return err
	}
	if err := e.commit(rec, from, res, false); err != nil {
		return fmt.Errorf("deleting %s: %w", rec.ID(), err)
	}
	e.logr(zerolog.InfoLevel, rec.Reservation).Str("reason", reason).Msg("reservation deleted; nothing was provisioned")
	return nil
}

// resendScan is how many pending outbox entries a repeated event's
// result is looked for among before it is enqueued again.
const resendScan = 512

// boundedRefusal returns the copy of a refused reservation that its
// Failed record keeps: every string field cut to MaxRefusedField, Data
// dropped unless it is at most MaxDataSize, no explorer result.
func boundedRefusal(r *provision.Reservation) *provision.Reservation {
	c := stripped(r)
	c.NodeID = provision.Truncate(c.NodeID, provision.MaxRefusedField)
	c.UserID = provision.Truncate(c.UserID, provision.MaxRefusedField)
	c.Type = provision.ReservationType(provision.Truncate(string(c.Type), provision.MaxRefusedField))
	c.Signature = provision.Truncate(c.Signature, provision.MaxRefusedField)
	c.DeleteSignature = provision.Truncate(c.DeleteSignature, provision.MaxRefusedField)
	c.Reference = provision.Truncate(c.Reference, provision.MaxRefusedField)
	if len(c.Data) > provision.MaxDataSize {
		c.Data = nil // do not keep what was refused for its size
	}
	return c
}

// pendingResult reports whether res (the same reservation, digest,
// version and state) already waits in the outbox among its first
// resendScan entries, so that a repeated event does not enqueue it twice.
func (e *Engine) pendingResult(res *provision.Result) (bool, error) {
	entries, err := e.store.Pending(resendScan)
	if err != nil {
		return false, err
	}
	for _, en := range entries {
		if p := en.Result; en.Kind == provision.OutboxResult && p != nil && p.ID == res.ID && p.Digest == res.Digest &&
			p.Version == res.Version && p.State == res.State && p.Message == res.Message {
			return true, nil
		}
	}
	return false, nil
}
