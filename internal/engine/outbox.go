package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/internal/backoff"
	"github.com/edgeprov/provisiond/provision"
)

// outboxBatch is how many entries the sender reads, delivers and
// acknowledges at once.
const outboxBatch = 64

// wakeOutbox tells the sender that something was enqueued.
func (e *Engine) wakeOutbox() {
	select {
	case e.outboxWake <- struct{}{}:
	default:
	}
}

// sendOutbox delivers the outbox to the explorer, oldest first, until ctx
// ends. It reads up to outboxBatch entries, delivers them (consecutive
// results in one FeedbackBatch request when the Feedbacker is a
// BatchFeedbacker, otherwise one Feedback call each; stats one
// UpdateStats call each) and acknowledges what was delivered in one store
// write. An entry is acknowledged (removed) only after the explorer took
// it.
//
// A temporary failure stops the pass at the failed entry: the entries
// before it are acknowledged, it and every entry after it (even ones the
// same batch request delivered) are delivered again after a jittered
// exponential backoff (reset on success), for as long as it takes, so the
// last delivery of each entry follows the order of the outbox and nothing
// is lost however long the explorer is away or refuses the node's
// requests. The Feedbacker decides what is final: explorer.Client makes
// every failure of a request temporary, and only a verdict on one result
// (a Refusal) permanent. A permanent refusal of an entry is logged at
// error level, reported to Hooks (Refused, by reason), recorded on the
// reservation's record (Record.Refused, shown by `provisiond cache show`)
// and acknowledged: an entry the explorer will never take must not block
// every entry behind it.
//
// OutboxRate counts entries, not requests: a request carrying n results
// waits for n tokens, and (unless the rate is unlimited) carries at most
// OutboxBurst results.
func (e *Engine) sendOutbox(ctx context.Context) {
	batcher, _ := e.fb.(provision.BatchFeedbacker)
	failures := 0
	var delivered []uint64
	// flush acknowledges what was delivered; false when the store failed.
	flush := func() bool {
		if len(delivered) == 0 {
			return true
		}
		err := e.store.Ack(delivered...)
		delivered = delivered[:0]
		if err != nil {
			e.log.Error().Err(err).Msg("acknowledging outbox entries failed")
			return false
		}
		return true
	}
	defer flush() // what was delivered before ctx ended
	for {
		entries, err := e.store.Pending(outboxBatch)
		if err == nil {
			err = e.refreshDepth()
		}
		if err != nil {
			failures++
			e.log.Error().Err(err).Msg("reading outbox failed")
			if !backoff.Sleep(ctx, e.backoff.Delay(failures)) {
				return
			}
			continue
		}
		if len(entries) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-e.outboxWake:
			}
			continue
		}
		retry, wait := false, time.Duration(0) // a temporary failure stopped the pass
		for len(entries) > 0 && !retry {
			n := 1
			if batcher != nil && entries[0].Kind == provision.OutboxResult && entries[0].Result != nil {
				n = e.resultRun(entries)
			}
			if err := e.limiter.WaitN(ctx, n); err != nil {
				return
			}
			errs := e.deliver(ctx, batcher, entries[:n])
			if ctx.Err() != nil {
				return
			}
			for i, en := range entries[:n] {
				err := errs[i]
				switch {
				case err == nil:
					failures = 0
					e.hooks.Delivered(en.Kind)
				case provision.IsTemporary(err):
					e.hooks.OutboxError(en.Kind, err)
					failures++
					retry, wait = true, e.backoff.Delay(failures)
					e.outboxLog(zerolog.WarnLevel, en).Err(err).Int("failures", failures).Dur("retry_in", wait).Msg("delivery failed; retrying")
				default:
					reason := refusalReason(err)
					e.hooks.OutboxError(en.Kind, err)
					e.hooks.Refused(en.Kind, reason)
					e.outboxLog(zerolog.ErrorLevel, en).Err(err).Str("reason", reason).Msg("explorer refused the entry for good; dropping it")
					if en.Kind == provision.OutboxResult && en.Result != nil {
						e.noteRefusal(en.Result, reason, err)
					}
				}
				if retry {
					break
				}
				delivered = append(delivered, en.Seq)
			}
			entries = entries[n:]
		}
		if !flush() && !retry {
			failures++
			retry, wait = true, e.backoff.Delay(failures)
		}
		if retry && !backoff.Sleep(ctx, wait) {
			return
		}
	}
}

// refusalReason is the reason of a permanent delivery error: its
// Refusal's, or "undeliverable".
func refusalReason(err error) string {
	var r *provision.Refusal
	if errors.As(err, &r) && r.Reason != "" {
		return r.Reason
	}
	return "undeliverable"
}

// noteRefusal records on the record of res that the explorer refused res
// for good. A record that is gone (collected), or that holds another
// reservation under the same id (res answered a refused replay or
// impostor, whose digest differs), needs no note; a store failure is
// logged: the refusal is in the log and the metric already.
func (e *Engine) noteRefusal(res *provision.Result, reason string, cause error) {
	mu := e.lock(res.ID)
	mu.Lock()
	defer mu.Unlock()
	rec, err := e.store.Get(res.ID)
	if errors.Is(err, provision.ErrNotFound) || err == nil && rec.Digest != res.Digest {
		return
	}
	if err == nil {
		msg := cause.Error()
		if len(msg) > provision.MaxRefusalMessage {
			msg = msg[:provision.MaxRefusalMessage]
		}
		now := e.now()
		rec.Refused = &provision.ResultRefusal{State: res.State, Created: res.Created, Reason: reason, Message: msg, At: now}
		rec.Updated = now
		err = e.commit(rec, rec.State, nil, false)
	}
	if err != nil {
		e.log.Error().Err(err).Str("id", res.ID).Msg("recording the explorer's refusal of a result failed")
	}
}

// resultRun returns how many entries at the start of entries are results
// (at least one: the caller checked the first) that go in one batch
// request: at most OutboxBurst unless the rate is unlimited.
func (e *Engine) resultRun(entries []*provision.OutboxEntry) int {
	limit := len(entries)
	if e.limiter.Limit() != rate.Inf {
		limit = min(limit, max(e.limiter.Burst(), 1))
	}
	n := 1
	for n < limit && entries[n].Kind == provision.OutboxResult && entries[n].Result != nil {
		n++
	}
	return n
}

// deliver sends entries and returns one error per entry. Results, one or
// several, are sent in one FeedbackBatch request; when that request fails
// for good as a whole (or answers with the wrong number of errors), they
// are sent again one by one, so that only the results the explorer
// refuses are dropped.
func (e *Engine) deliver(ctx context.Context, batcher provision.BatchFeedbacker, entries []*provision.OutboxEntry) []error {
	errs := make([]error, len(entries))
	// Results go through the batch endpoint even one at a time: only its
	// answer carries a verdict on each result (a refusal for good), while
	// any failure of a single PUT is the request's, retried forever.
	if batcher != nil && entries[0].Kind == provision.OutboxResult && entries[0].Result != nil {
		rs := make([]*provision.Result, len(entries))
		for i, en := range entries {
			rs[i] = en.Result
		}
		got, err := batcher.FeedbackBatch(ctx, e.nodeID, rs)
		switch {
		case err == nil && len(got) != len(rs):
			err = provision.Permanentf("%w: explorer answered %d results with %d outcomes", provision.ErrBadData, len(rs), len(got))
		case err == nil:
			return got
		}
		if provision.IsTemporary(err) {
			for i := range errs {
				errs[i] = err
			}
			return errs
		}
		e.log.Warn().Err(err).Int("results", len(rs)).Msg("batch delivery refused; delivering one by one")
	}
	for i, en := range entries {
		errs[i] = e.deliverOne(ctx, en)
		if provision.IsTemporary(errs[i]) {
			for j := i + 1; j < len(errs); j++ {
				errs[j] = errs[i] // not tried: delivered after the retry
			}
			break
		}
	}
	return errs
}

// deliverOne sends one entry.
func (e *Engine) deliverOne(ctx context.Context, en *provision.OutboxEntry) error {
	switch {
	case en.Kind == provision.OutboxResult && en.Result != nil:
		return e.fb.Feedback(ctx, e.nodeID, en.Result)
	case en.Kind == provision.OutboxStats && en.Stats != nil:
		return e.fb.UpdateStats(ctx, e.nodeID, en.Stats)
	case en.Kind == provision.OutboxHeartbeat && en.Heartbeat != nil:
		return e.deliverHeartbeat(ctx, en.Heartbeat)
	}
	return provision.Permanentf("%w: outbox entry %d of kind %q has no payload", provision.ErrBadData, en.Seq, en.Kind)
}

// outboxLog starts a log line about an entry; a result's line carries the
// reservation ID and type.
func (e *Engine) outboxLog(level zerolog.Level, en *provision.OutboxEntry) *zerolog.Event {
	ev := e.log.WithLevel(level).Uint64("seq", en.Seq).Str("kind", string(en.Kind))
	if en.Result != nil {
		ev = ev.Str("id", en.Result.ID).Str("type", string(en.Result.Type))
	}
	return ev
}

// refreshDepth reads the outbox depth for Status.
func (e *Engine) refreshDepth() error {
	d, err := e.store.Depth()
	if err != nil {
		return fmt.Errorf("reading outbox depth: %w", err)
	}
	e.mu.Lock()
	e.depth = d
	e.mu.Unlock()
	return nil
}
