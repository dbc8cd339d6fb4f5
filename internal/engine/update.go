package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/sched"
	"github.com/edgeprov/provisiond/provision"
)

// update handles r, another version of the record rec (the record lock is
// held). A valid owner-signed next version of a deployed record
// (provision.CheckUpdate) is priced and goes through the same admission as
// a new reservation, counting its units in place of the current
// version's: when it fits, the record is written provisioning the new
// version, with the current one kept as its Prior, in one write, and
// queued; the primitive then converges the workload to the new version
// (settle). Anything else is refused with a signed error result for r's
// digest that names the version which keeps running; the record is not
// touched.
func (e *Engine) update(ctx context.Context, rec *provision.Record, r *provision.Reservation, digest string) error {
	if f := rec.FailedUpdate; f != nil && f.Digest == digest {
		return e.resendResult(f) // tried and rolled back: the same answer
	}
	if err := provision.Validate(r, e.nodeID, e.now()); err != nil {
		// A version the owner signed for this node whose data is bad (a
		// peer key that is not a key) is refused like any other owner's
		// update: recorded, so that the owner's next version, which the
		// explorer lets name it, is not refused for skipping it.
		owners := r.UserID == rec.Reservation.UserID && r.NodeID == e.nodeID && r.Verify() == nil
		return e.refuseUpdate(rec, r, digest, err, owners)
	}
	if r.UserID != rec.Reservation.UserID {
		return e.refuseUpdate(rec, r, digest, provision.Permanentf("%w: only the owner may update", provision.ErrBadUpdate), false)
	}
	// From here on r is the owner's: a refusal is recorded (FailedUpdate),
	// and the next version may build on it, as the explorer, which holds
	// the refused version, lets the owner do.
	base, baseDigest := rec.Reservation, rec.Digest
	if f := rec.FailedUpdate; f != nil && r.Previous == f.Digest {
		b := *rec.Reservation
		b.Version = f.Version
		base, baseDigest = &b, f.Digest
	}
	if err := provision.CheckUpdate(base, baseDigest, r); err != nil {
		return e.refuseUpdate(rec, r, digest, err, true)
	}
	if rec.State != provision.Deployed {
		return e.refuseUpdate(rec, r, digest, provision.Permanentf("%w: version %d is %s, not deployed", provision.ErrBadUpdate, rec.Reservation.Version, rec.State), true)
	}
	units, err := e.statser.Units(r)
	if err != nil {
		if provision.IsTemporary(err) {
			return fmt.Errorf("pricing %s: %w", r.ID, err)
		}
		return e.refuseUpdate(rec, r, digest, err, true)
	}
	next := *rec
	next.Prior = &provision.Prior{Reservation: rec.Reservation, Digest: rec.Digest, Units: rec.Units, Result: rec.Result}
	next.Reservation, next.Digest, next.Units = stripped(r), digest, units
	a := e.admission(ctx, &next, provision.Deployed, false)
	switch {
	case a.err != nil:
		return fmt.Errorf("updating %s: %w", r.ID, a.err)
	case a.capacityErr != nil:
		return fmt.Errorf("updating %s: %w", r.ID, a.capacityErr)
	case a.depErr != nil:
		return e.refuseUpdate(rec, r, digest, a.depErr, true)
	case a.wait > 0:
		return e.refuseUpdate(rec, r, digest, provision.Permanentf("%w: a dependency is not deployed", provision.ErrBadUpdate), true)
	case a.refused != nil:
		return e.refuseUpdate(rec, r, digest, a.refused, true)
	}
	switch err := a.finish(); {
	case errors.Is(err, provision.ErrReplay):
		return e.refuseUpdate(rec, r, digest, provision.Permanent(fmt.Errorf("%w: digest %s", provision.ErrReplay, digest)), false)
	case err != nil:
		return fmt.Errorf("updating %s: %w", r.ID, err)
	}
	e.logr(zerolog.InfoLevel, r).Uint32("version", r.Version).Uint32("from", rec.Reservation.Version).Msg("update admitted")
	e.admitted(&next, nil)
	return nil
}

// refuseUpdate answers a refused update r of rec with a signed error
// result for r's digest that says which version keeps running. With keep
// (r is the owner's), the result is also recorded as rec's FailedUpdate,
// in the same write: a repeat gets the same answer and the owner's next
// version may name r (see update). Otherwise the record is not touched.
// The record lock is held.
func (e *Engine) refuseUpdate(rec *provision.Record, r *provision.Reservation, digest string, cause error, keep bool) error {
	e.logr(zerolog.WarnLevel, r).Err(cause).Str("digest", digest).Uint32("version", r.Version).Msg("update refused")
	msg := fmt.Sprintf("update to version %d refused: %v; version %d (%s) keeps running", r.Version, cause, rec.Reservation.Version, rec.State)
	res, err := e.newResult(r, digest, provision.StateError, msg, nil)
	if err != nil {
		return err
	}
	if keep && !rec.State.Final() && rec.State != provision.Deleting {
		rec.FailedUpdate = res
		if err := e.commitWith(rec, rec.State, nil, false, nil, res)(); err != nil {
			return fmt.Errorf("recording the refusal of %s: %w", r.ID, err)
		}
		return nil
	}
	if dup, err := e.pendingResult(res); err != nil || dup {
		return err
	}
	if err := e.store.Enqueue(resultEntry(res)); err != nil {
		return fmt.Errorf("enqueuing refusal of %s: %w", r.ID, err)
	}
	e.wakeOutbox()
	return nil
}

// rollback returns cur, provisioning an update that failed for good, to
// its Prior version: the record is written provisioning the prior version
// again (its units back in the tally, its ok result kept: Restoring), with
// a signed error result for the failed version (kept as FailedUpdate), in
// one write, and queued, so that the primitive converges the workload back
// to the prior version. The record lock is held.
func (e *Engine) rollback(cur *provision.Record, cause error) error {
	failed, prior := cur.Reservation, cur.Prior
	msg := fmt.Sprintf("update to version %d failed: %v; returning to version %d", failed.Version, cause, prior.Reservation.Version)
	res, err := e.newResult(failed, cur.Digest, provision.StateError, msg, nil)
	if err != nil {
		return err
	}
	was := cur.Units
	cur.Reservation, cur.Digest, cur.Units, cur.Result, cur.Prior = prior.Reservation, prior.Digest, prior.Units, prior.Result, nil
	cur.FailedUpdate, cur.Restoring = res, cur.Result != nil && cur.Result.State == provision.StateOk
	cur.Move(provision.Provisioning, e.now(), msg)
	e.tallyMu.Lock()
	finish := e.commitWith(cur, provision.Provisioning, nil, false, &was, res)
	e.tallyMu.Unlock()
	if err := finish(); err != nil {
		return fmt.Errorf("rolling back %s: %w", cur.ID(), err)
	}
	e.logr(zerolog.WarnLevel, failed).Err(cause).Uint32("version", prior.Reservation.Version).Msg("update failed; returning to the prior version")
	e.sched.Request(cur.ID(), sched.Drive, false)
	return nil
}

// deleteVersion honours the owner's valid delete of r, another version of
// rec's reservation (the ID is the owner's whatever its version): rec
// moves to deleting. An invalid one re-sends the stored result. The record
// lock is held.
func (e *Engine) deleteVersion(rec *provision.Record, r *provision.Reservation) error {
	if rec.State == provision.Deleting || rec.State == provision.Deleted {
		return e.resend(rec)
	}
	if err := provision.Validate(r, e.nodeID, e.now()); err != nil {
		e.logr(zerolog.WarnLevel, r).Err(err).Msg("delete of another version refused; re-sending the current result")
		return e.resend(rec)
	}
	rec.DeleteOf = &provision.VersionRef{Version: r.Version, Digest: r.Digest()}
	return e.markDeleting(rec, fmt.Sprintf("deleted by owner (version %d)", r.Version))
}

// deletedAs returns the reservation and digest a "deleted" result of rec
// answers: the version the owner's delete named (DeleteOf), else the one
// the explorer holds after a refused or rolled-back update (FailedUpdate),
// else rec's own. Only the version differs from rec.Reservation: the
// workload removed is the one that runs.
func deletedAs(rec *provision.Record) (*provision.Reservation, string) {
	ref := rec.DeleteOf
	if ref == nil && rec.FailedUpdate != nil {
		ref = &provision.VersionRef{Version: rec.FailedUpdate.Version, Digest: rec.FailedUpdate.Digest}
	}
	if ref == nil {
		return rec.Reservation, storedDigest(rec)
	}
	r := *rec.Reservation
	r.Version = ref.Version
	return &r, ref.Digest
}
