package provision

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
)

// outboxBatch is how many entries the sender reads at once.
const outboxBatch = 64

// wakeOutbox tells the sender that something was enqueued.
func (e *Engine) wakeOutbox() {
	select {
	case e.outboxWake <- struct{}{}:
	default:
	}
}

// sendOutbox delivers the outbox to the explorer, oldest first, until ctx
// ends. An entry is acknowledged (removed) only after the Feedbacker
// delivered it. A temporary failure stops the pass and retries the same
// entry after a jittered exponential backoff (reset on success), so
// entries of a reservation are delivered in order and nothing is lost
// however long the explorer is away. A permanent refusal is logged at error
// level, reported to Hooks and acknowledged: an entry the explorer will
// never take must not block every entry behind it. Deliveries respect
// OutboxRate.
func (e *Engine) sendOutbox(ctx context.Context) {
	failures := 0
	for {
		entries, err := e.store.Pending(outboxBatch)
		if err == nil {
			err = e.refreshDepth()
		}
		if err != nil {
			failures++
			e.log.Error().Err(err).Msg("reading outbox failed")
			if !sleep(ctx, e.backoff.delay(failures)) {
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
		for _, en := range entries {
			if err := e.limiter.Wait(ctx); err != nil {
				return
			}
			err := e.deliver(ctx, en)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				e.hooks.OutboxError(en.Kind, err)
				if IsTemporary(err) {
					failures++
					wait := e.backoff.delay(failures)
					e.outboxLog(zerolog.WarnLevel, en).Err(err).Int("failures", failures).Dur("retry_in", wait).Msg("delivery failed; retrying")
					if !sleep(ctx, wait) {
						return
					}
					break
				}
				e.outboxLog(zerolog.ErrorLevel, en).Err(err).Msg("explorer refused the entry for good; dropping it")
			} else {
				failures = 0
				e.hooks.Delivered(en.Kind)
			}
			if err := e.store.Ack(en.Seq); err != nil {
				e.log.Error().Err(err).Uint64("seq", en.Seq).Msg("acknowledging outbox entry failed")
				break
			}
		}
	}
}

// deliver sends one entry.
func (e *Engine) deliver(ctx context.Context, en *OutboxEntry) error {
	switch {
	case en.Kind == OutboxResult && en.Result != nil:
		return e.fb.Feedback(ctx, e.nodeID, en.Result)
	case en.Kind == OutboxStats && en.Stats != nil:
		return e.fb.UpdateStats(ctx, e.nodeID, en.Stats)
	}
	return Permanentf("%w: outbox entry %d of kind %q has no payload", ErrBadData, en.Seq, en.Kind)
}

// outboxLog starts a log line about an entry; a result's line carries the
// reservation ID and type.
func (e *Engine) outboxLog(level zerolog.Level, en *OutboxEntry) *zerolog.Event {
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
