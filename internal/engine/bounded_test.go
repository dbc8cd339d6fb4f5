package engine_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// pendingResults returns the results waiting in the outbox for id.
func pendingResults(t testing.TB, h *harness, id string) []*provision.Result {
	t.Helper()
	entries, err := h.store.Pending(10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []*provision.Result
	for _, e := range entries {
		if e.Result != nil && e.Result.ID == id {
			out = append(out, e.Result)
		}
	}
	return out
}

// A compromised explorer hands the node a reservation with huge fields:
// what the node keeps of its refusal, and signs, is bounded.
func TestRefusalStoresBoundedFields(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.fb.SetDown(true) // results stay in the outbox, to be read
		h.start(nil)
		huge := strings.Repeat("x", 1<<20)
		r := h.user.Volume("big", "node-"+huge, 1, time.Now(), time.Hour) // another node's: refused
		r.Reference = huge
		r.Signature += huge
		r.DeleteSignature = huge
		r.Type = provision.ReservationType("volume" + huge)
		h.deliver(r)
		settle(0)
		rec := h.wantState("big", provision.Failed)
		c := rec.Reservation
		for name, v := range map[string]string{
			"node_id": c.NodeID, "user_id": c.UserID, "reference": c.Reference, "signature": c.Signature,
			"delete_signature": c.DeleteSignature, "type": string(c.Type),
		} {
			if len(v) > provision.MaxRefusedField {
				t.Errorf("stored %s has %d bytes, want at most %d", name, len(v), provision.MaxRefusedField)
			}
		}
		for _, tr := range rec.History {
			if len(tr.Message) > provision.MaxMessageLength {
				t.Errorf("stored transition message has %d bytes", len(tr.Message))
			}
		}
		results := pendingResults(t, h, "big")
		if len(results) != 1 {
			t.Fatalf("%d results pending, want 1", len(results))
		}
		if res := results[0]; len(res.Message) > provision.MaxMessageLength || len(res.Type) > provision.MaxRefusedField || res.State != provision.StateError {
			t.Errorf("result: state %s, %d bytes of message, %d of type", res.State, len(res.Message), len(res.Type))
		}
		if rec.Result == nil || len(rec.Result.Message) > provision.MaxMessageLength {
			t.Errorf("record's result not bounded: %+v", rec.Result)
		}
	})
}

// A repeated event does not enqueue the same result again while it waits
// in the outbox: neither an accepted reservation's, nor a refusal kept as
// a record, nor one that could not be kept (an unsafe id).
func TestRepeatedEventEnqueuesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.fb.SetDown(true)
		h.start(nil)
		ok := h.user.Volume("v1", testNode, 1, time.Now(), time.Hour)
		refused := h.user.Volume("other", "node-2", 1, time.Now(), time.Hour)
		unsafe := h.user.Volume("../x", testNode, 1, time.Now(), time.Hour)
		for range 5 {
			for _, r := range []*provision.Reservation{ok, refused, unsafe} {
				h.deliver(r)
			}
			settle(time.Second)
		}
		for _, id := range []string{"v1", "other", "../x"} {
			results := pendingResults(t, h, id)
			seen := map[string]int{}
			for _, res := range results {
				seen[res.Signature]++
			}
			for sig, n := range seen {
				if n > 1 {
					t.Errorf("%s: the same result (%.8s…) is pending %d times", id, sig, n)
				}
			}
			if len(results) == 0 {
				t.Errorf("%s: no result pending", id)
			}
		}
	})
}

// inUsePrims answers the first decommissions of one id as a volume a
// container still mounts.
type inUsePrims struct {
	*provisiontest.RecordingPrimitives
	id   string
	left atomic.Int32
}

func (p *inUsePrims) Decommission(ctx context.Context, r *provision.Reservation) error {
	if r.ID == p.id && p.left.Add(-1) >= 0 {
		return provision.Temporary(fmt.Errorf("volume %s is mounted by container c1: %w", r.ID, provision.ErrInUse))
	}
	return p.RecordingPrimitives.Decommission(ctx, r)
}

// A delete of a workload in use waits (retried) and completes once it is
// free; the deleted result says why it waited.
func TestDeleteInUseWaitsAndSaysWhy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var prims *inUsePrims
		h := newHarness(t, func(o *engine.Options) {
			prims = &inUsePrims{RecordingPrimitives: o.Primitives.(*provisiontest.RecordingPrimitives), id: "v1"}
			prims.left.Store(3)
			o.Primitives = prims
		})
		h.start(nil)
		r := h.user.Volume("v1", testNode, 1, time.Now(), 24*time.Hour)
		h.deliver(r)
		settle(0)
		h.wantState("v1", provision.Deployed)
		h.deliver(h.user.Delete(r))
		settle(0)
		h.wantState("v1", provision.Deleting)
		settle(time.Hour) // the retries' backoff
		rec := h.wantState("v1", provision.Deleted)
		if prims.left.Load() >= 0 {
			t.Fatalf("the in-use decommission was not retried until free")
		}
		res := h.lastResult("v1")
		if res == nil || res.State != provision.StateDeleted || !strings.Contains(res.Message, "waited: volume v1 is mounted by container c1") {
			t.Fatalf("deleted result = %+v, want it to say why it waited", res)
		}
		if n := strings.Count(rec.History[len(rec.History)-1].Message, "waited"); n != 1 {
			t.Errorf("deleted message says waited %d times: %q", n, rec.History[len(rec.History)-1].Message)
		}
	})
}
