package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/sched"
	"github.com/edgeprov/provisiond/provision"
)

// reconcileLoop measures the capacity again and queues an inspection of
// every deployed record (when the primitives can inspect) each
// ResyncInterval until ctx ends.
func (e *Engine) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(e.resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := e.refreshCapacity(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn().Err(err).Msg("reading capacity failed")
		}
		if e.insp == nil {
			continue
		}
		n := 0
		err := e.store.Scan(func(rec *provision.Record) error {
			n++
			e.sched.Request(rec.ID(), sched.Inspect, false)
			return nil
		}, provision.Deployed)
		if err != nil {
			e.log.Error().Err(err).Msg("scanning deployed records failed")
			continue
		}
		e.log.Debug().Int("deployed", n).Msg("reconcile queued")
	}
}

// inspect checks a deployed workload. One that vanished (provision.ErrVanished) is
// repaired by provisioning it again (idempotent); the record stays
// deployed meanwhile, so a crash during the repair is met by the inspection
// at start. Any other error, or a failed repair, increments the persisted
// Failures; success resets it. After MaxInspectFailures consecutive
// failures the record fails with one signed error result and its leftovers
// are purged. When the primitives report the workload's status
// (provision.StatusInspector) and it changed, a new "ok" result carries it; the
// outcome asks for another inspection when one came too soon after the
// last result (StatusInterval).
func (e *Engine) inspect(ctx context.Context, id string) outcome {
	if e.insp == nil {
		return outcome{}
	}
	rec, err := e.store.Get(id)
	if err != nil || rec.State != provision.Deployed {
		return outcome{}
	}
	r := rec.Reservation
	var data any
	err = e.call(ctx, r, "inspect", func(ctx context.Context) error {
		if si, ok := e.insp.(provision.StatusInspector); ok {
			var err error
			data, err = si.InspectStatus(ctx, r)
			return err
		}
		return e.insp.Inspect(ctx, r)
	})
	if errors.Is(err, provision.ErrVanished) && ctx.Err() == nil {
		e.logr(zerolog.WarnLevel, r).Err(err).Msg("workload vanished; repairing")
		err = e.call(ctx, r, "repair", func(ctx context.Context) error {
			var err error
			data, err = e.prims.Provision(ctx, r)
			return err
		})
		if err != nil {
			err = fmt.Errorf("repairing vanished workload: %w", err)
		} else {
			e.logr(zerolog.InfoLevel, r).Msg("workload repaired")
		}
	}
	if ctx.Err() != nil {
		return outcome{}
	}
	if _, ok := e.insp.(provision.StatusInspector); !ok {
		data = nil // a repair's data is the status only when the primitives report one
	}
	failed, wait := e.inspected(id, err, data)
	if failed != nil {
		e.purgeRecord(ctx, failed)
	}
	if wait > 0 {
		return outcome{retry: wait, ops: sched.Inspect}
	}
	return outcome{}
}

// InspectSoon queues an inspection of id: a primitive that noticed a
// change of a deployed workload calls it (see Watched). It never blocks.
func (e *Engine) InspectSoon(id string) {
	e.sched.Request(id, sched.Inspect, false)
}

// inspected writes the outcome of an inspection; it returns the record
// when it failed for good. With data that differs from the last result's,
// it signs a new "ok" result with it, or returns how long to wait before
// it may (StatusInterval).
func (e *Engine) inspected(id string, err error, data any) (*provision.Record, time.Duration) {
	mu := e.lock(id)
	mu.Lock()
	defer mu.Unlock()
	cur, ok, lerr := e.reload(id, provision.Deployed)
	if lerr != nil || !ok {
		return nil, 0
	}
	if err == nil {
		res, wait, serr := e.statusResult(cur, data)
		if serr != nil {
			e.logr(zerolog.ErrorLevel, cur.Reservation).Err(serr).Msg("signing the workload's status failed")
		}
		if cur.Failures == 0 && res == nil {
			return nil, wait
		}
		cur.Failures = 0
		cur.Updated = e.now()
		if cerr := e.commit(cur, provision.Deployed, res, false); cerr != nil {
			e.logr(zerolog.ErrorLevel, cur.Reservation).Err(cerr).Msg("resetting inspection failures failed")
		} else if res != nil {
			e.logr(zerolog.InfoLevel, cur.Reservation).RawJSON("status", res.Data).Msg("workload status changed")
		}
		return nil, wait
	}
	cur.Failures++
	if cur.Failures < e.maxInspectFailures {
		cur.Updated = e.now()
		if cerr := e.commit(cur, provision.Deployed, nil, false); cerr != nil {
			e.logr(zerolog.ErrorLevel, cur.Reservation).Err(cerr).Msg("counting inspection failure failed")
		}
		e.logr(zerolog.WarnLevel, cur.Reservation).Err(err).Int("failures", cur.Failures).Msg("inspection failed")
		return nil, 0
	}
	cause := fmt.Errorf("unhealthy after %d consecutive inspections: %w", cur.Failures, err)
	if ferr := e.fail(cur, cause); ferr != nil {
		e.logr(zerolog.ErrorLevel, cur.Reservation).Err(ferr).Msg("failing unhealthy workload failed")
		return nil, 0
	}
	return cur, 0
}

// statusResult returns a new signed "ok" result for rec carrying data,
// when data is not nil and differs from the data of rec's last "ok"
// result; nil when nothing changed. When the last result is younger than
// StatusInterval it returns no result but the time left to wait. The
// record lock is held.
func (e *Engine) statusResult(rec *provision.Record, data any) (*provision.Result, time.Duration, error) {
	if data == nil {
		return nil, 0, nil
	}
	raw, ok := data.(json.RawMessage)
	if !ok {
		b, err := json.Marshal(data)
		if err != nil {
			return nil, 0, fmt.Errorf("encoding the status of %s: %w", rec.ID(), err)
		}
		raw = b
	}
	last := rec.Result
	if string(raw) == "null" || (last != nil && last.State == provision.StateOk && bytes.Equal(provision.CanonicalData(raw), provision.CanonicalData(last.Data))) {
		return nil, 0, nil
	}
	if last != nil {
		if wait := last.Created.Add(e.statusInterval).Sub(e.now()); wait > 0 {
			return nil, wait, nil
		}
	}
	res, err := e.newResult(rec.Reservation, rec.Digest, provision.StateOk, "", raw)
	return res, 0, err
}

// CleanupResources removes the orphans among what the primitives list:
// resources whose reservation has no live record (for networks: no live
// record holds the NetworkID). It touches only what List returned, and
// when the store fails to answer for any resource it removes nothing: a
// transient error must never cause a deletion. Without a Lister it does
// nothing. The Engine runs it once after the sources caught up.
func (e *Engine) CleanupResources(ctx context.Context) error {
	if e.lister == nil {
		return nil
	}
	list, err := e.lister.List(ctx)
	if err != nil {
		return fmt.Errorf("listing resources: %w", err)
	}
	var orphans []provision.Resource
	for _, res := range list {
		live, err := e.live(res)
		if err != nil {
			return fmt.Errorf("checking %s %s: %w (nothing removed)", res.Type, res.Name, err)
		}
		if !live {
			orphans = append(orphans, res)
		}
	}
	var errs []error
	for _, res := range orphans {
		if err := e.lister.Remove(ctx, res); err != nil {
			errs = append(errs, fmt.Errorf("removing %s %s: %w", res.Type, res.Name, err))
			e.log.Warn().Err(err).Str("id", res.ID).Str("type", string(res.Type)).Str("name", res.Name).Msg("removing orphan resource failed")
			continue
		}
		e.log.Info().Str("id", res.ID).Str("type", string(res.Type)).Str("name", res.Name).Msg("orphan resource removed")
	}
	return errors.Join(errs...)
}

// live reports whether a listed resource belongs to a live record.
func (e *Engine) live(res provision.Resource) (bool, error) {
	if res.Type == provision.NetworkReservation {
		_, err := e.store.Owner(res.ID)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, provision.ErrNotFound):
			return false, nil
		}
		return false, err
	}
	rec, err := e.store.Get(res.ID)
	switch {
	case err == nil:
		return !rec.State.Final(), nil
	case errors.Is(err, provision.ErrNotFound):
		return false, nil
	}
	return false, err
}
