package engine

import (
	"context"
	"fmt"

	"github.com/edgeprov/provisiond/provision"
)

// MaxPendingHeartbeat is the outbox depth at which EnqueueHeartbeat stops
// adding heartbeats: an explorer unreachable for weeks must not grow the
// node's database without bound (at a 5-minute interval, 30 days of
// heartbeats are 8,640 entries).
const MaxPendingHeartbeat = 10000

// EnqueueHeartbeat adds a signed heartbeat to the outbox and wakes the
// sender. When the outbox already holds MaxPendingHeartbeat entries, the
// heartbeat is not stored and false is returned.
func (e *Engine) EnqueueHeartbeat(hb *provision.Heartbeat) (bool, error) {
	if hb == nil || hb.Signature == "" {
		return false, provision.Permanentf("%w: enqueuing an unsigned heartbeat", provision.ErrBadHeartbeat)
	}
	depth, err := e.store.Depth()
	if err != nil {
		return false, fmt.Errorf("reading outbox depth: %w", err)
	}
	if depth >= MaxPendingHeartbeat {
		return false, nil
	}
	if err := e.store.Enqueue(&provision.OutboxEntry{Kind: provision.OutboxHeartbeat, Heartbeat: hb, Created: hb.Created}); err != nil {
		return false, fmt.Errorf("enqueuing heartbeat: %w", err)
	}
	e.wakeOutbox()
	return true, nil
}

// deliverHeartbeat sends a heartbeat entry through the Feedbacker's
// HeartbeatSender.
func (e *Engine) deliverHeartbeat(ctx context.Context, hb *provision.Heartbeat) error {
	hs, ok := e.fb.(provision.HeartbeatSender)
	if !ok {
		return provision.Permanentf("%w: the feedbacker does not deliver heartbeats", provision.ErrBadData)
	}
	return hs.Heartbeat(ctx, e.nodeID, hb)
}
