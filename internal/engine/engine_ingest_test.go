package engine_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// Every item is answered: invalid ones with a signed error result (never
// dropped, never a panic), repeats with the stored result.
func TestEngineIngestRefusals(t *testing.T) {
	_, nodePub := provisiontest.NewNodeSigner(1)
	tests := []struct {
		name    string
		setup   func(h *harness) *provision.Reservation // delivered before r
		r       func(h *harness) *provision.Reservation
		message string
		state   provision.State // of the record; "" when none is kept
	}{
		{
			name: "bad-signature",
			r: func(h *harness) *provision.Reservation {
				r := h.user.Volume("x", testNode, 1, time.Now(), time.Hour)
				r.Reference = "changed after signing"
				return r
			},
			message: "bad reservation signature", state: provision.Failed,
		},
		{
			name: "wrong-node",
			r: func(h *harness) *provision.Reservation {
				return h.user.Volume("x", "node-2", 1, time.Now(), time.Hour)
			},
			message: "another node", state: provision.Failed,
		},
		{
			name: "unknown-type",
			r: func(h *harness) *provision.Reservation {
				return h.user.Reservation("x", testNode, "vm", map[string]int{"cpu": 1}, time.Now(), time.Hour)
			},
			message: "unknown reservation type", state: provision.Failed,
		},
		{
			name: "unsafe-id",
			r: func(h *harness) *provision.Reservation {
				return h.user.Volume("../x", testNode, 1, time.Now(), time.Hour)
			},
			message: "bad name",
		},
		{
			name: "replay-under-new-id",
			setup: func(h *harness) *provision.Reservation {
				return h.user.Volume("orig", testNode, 1, time.Now(), time.Hour)
			},
			r: func(h *harness) *provision.Reservation {
				r := h.user.Volume("orig", testNode, 1, time.Now(), time.Hour)
				r.ID = "x" // the ID is not signed: same digest
				return r
			},
			message: "replay", state: provision.Failed,
		},
		{
			name: "network-name-in-use",
			setup: func(h *harness) *provision.Reservation {
				return h.user.Network("n1", testNode, "net", time.Now(), time.Hour)
			},
			r: func(h *harness) *provision.Reservation {
				return h.user.Network("x", testNode, "net", time.Now(), time.Hour)
			},
			message: `network name "net" in use`, state: provision.Failed,
		},
		{
			name: "other-content-under-known-id",
			setup: func(h *harness) *provision.Reservation {
				return h.user.Volume("x", testNode, 1, time.Now(), time.Hour)
			},
			r: func(h *harness) *provision.Reservation {
				r := h.user.Volume("x", testNode, 2, time.Now(), time.Hour)
				return r
			},
			message: "already holds another reservation", state: provision.Deployed,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, nil)
				h.start(nil)
				if tc.setup != nil {
					h.deliver(tc.setup(h))
					settle(0)
				}
				r := tc.r(h)
				h.deliver(r)
				settle(0)
				res := h.lastResult(r.ID)
				if res.State != provision.StateError || !strings.Contains(res.Message, tc.message) {
					t.Fatalf("result %s %q, want an error saying %q", res.State, res.Message, tc.message)
				}
				if err := res.Verify(nodePub); err != nil || res.Digest != r.Digest() || res.NodeID != testNode {
					t.Errorf("result not signed for this reservation: %v (%+v)", err, res)
				}
				if h.prims.Provisions(r.ID) > 1 || (tc.state == provision.Failed && h.prims.Provisions(r.ID) != 0) {
					t.Errorf("refused reservation provisioned %d times", h.prims.Provisions(r.ID))
				}
				rec, err := h.store.Get(r.ID)
				switch {
				case tc.state == "" && !errors.Is(err, provision.ErrNotFound):
					t.Errorf("record kept for an unsafe id: %v", err)
				case tc.state != "" && (err != nil || rec.State != tc.state):
					t.Errorf("record %+v (%v), want %s", rec, err, tc.state)
				}
				if tc.state == provision.Failed {
					// A repeat re-sends the same signed answer.
					h.deliver(r)
					settle(0)
					if again := h.lastResult(r.ID); again.Signature != res.Signature {
						t.Errorf("repeat answered %q, first %q", again.Message, res.Message)
					}
				}
			})
		})
	}
}

// A delete must be signed by the owner; a refused delete re-sends what is
// true on the node and touches nothing.
func TestEngineDeleteSignature(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		r := h.user.Volume("v", testNode, 1, time.Now(), time.Hour)
		h.deliver(r)
		settle(0)
		forged := provisiontest.NewUser(9).Delete(r)
		h.deliver(forged)
		settle(0)
		h.wantState("v", provision.Deployed)
		if res := h.lastResult("v"); res.State != provision.StateOk {
			t.Errorf("forged delete answered %s %q", res.State, res.Message)
		}
		h.deliver(h.user.Delete(r))
		settle(0)
		h.wantState("v", provision.Deleted)
		if res := h.lastResult("v"); res.State != provision.StateDeleted || res.Message != "deleted by owner" {
			t.Errorf("delete answered %s %q", res.State, res.Message)
		}
		// A delete of a reservation never seen is recorded and answered.
		u := h.user.Volume("unseen", testNode, 1, time.Now(), time.Hour)
		h.deliver(h.user.Delete(u))
		settle(0)
		h.wantState("unseen", provision.Deleted)
		if h.prims.Provisions("unseen") != 0 || h.lastResult("unseen").State != provision.StateDeleted {
			t.Errorf("unseen delete: provisions %d", h.prims.Provisions("unseen"))
		}
		h.checkStats(h.store)
	})
}

// blockAdd is a store whose Add of one ID waits until gate is closed.
type blockAdd struct {
	provision.Store
	id   string
	gate chan struct{}
}

func (s blockAdd) Add(rec *provision.Record, out ...*provision.OutboxEntry) error {
	if rec.ID() == s.id {
		<-s.gate
	}
	return s.Store.Add(rec, out...)
}

// Jobs are ingested concurrently: one slow write holds up neither the jobs
// of other IDs nor their acknowledgements, but the caught-up marker waits
// for every job sent before it.
func TestEngineIngestConcurrentWithBarrier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		gate := make(chan struct{})
		h.start(blockAdd{Store: h.store, id: "slow", gate: gate})
		slowAck := make(chan error, 1)
		if err := h.src.Send(h.ctx, provision.ReservationJob{
			Reservation: h.user.Volume("slow", testNode, 1, time.Now(), time.Hour),
			Ack:         func(err error) { slowAck <- err },
		}); err != nil {
			t.Fatal(err)
		}
		// Three IDs of other shards than "slow" (the shard seed is random).
		var others []string
		for i := 0; len(others) < 3; i++ {
			if id := fmt.Sprint("o", i); h.eng.IngestShard(id) != h.eng.IngestShard("slow") {
				others = append(others, id)
			}
		}
		for _, id := range others {
			h.deliver(h.user.Volume(id, testNode, 1, time.Now(), time.Hour)) // not held up by "slow"
		}
		caughtUp := make(chan error, 1)
		go func() { caughtUp <- h.src.CaughtUp(h.ctx) }()
		synctest.Wait()
		select {
		case <-caughtUp:
			t.Fatal("the caught-up marker was acknowledged before an earlier job was ingested")
		default:
		}
		if h.eng.Status().CaughtUp {
			t.Fatal("caught up before an earlier job was ingested")
		}
		close(gate)
		if err := <-slowAck; err != nil {
			t.Fatalf("slow job: %v", err)
		}
		if err := <-caughtUp; err != nil {
			t.Fatalf("caught-up marker: %v", err)
		}
		if !h.eng.Status().CaughtUp {
			t.Error("not caught up after the marker was acknowledged")
		}
		settle(0)
		for _, id := range append(others, "slow") {
			h.wantState(id, provision.Deployed)
		}
	})
}

// The jobs of one ID are ingested in the order the source sent them, even
// when the source does not wait for acknowledgements: a delete sent right
// after its reservation always finds it.
func TestEngineIngestKeepsOrderPerID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		var ids []string
		for i := range 100 {
			r := h.user.Volume(fmt.Sprint("v", i), testNode, 1, time.Now(), time.Hour)
			ids = append(ids, r.ID)
			for _, job := range []*provision.Reservation{r, h.user.Delete(r)} {
				if err := h.src.Send(h.ctx, provision.ReservationJob{Reservation: job}); err != nil {
					t.Fatal(err)
				}
			}
		}
		settle(engine.DefaultBackoffMax)
		for _, id := range ids {
			rec := h.wantState(id, provision.Deleted)
			if rec.History[0].State != provision.Accepted {
				t.Errorf("%s: history %+v; the delete was ingested before the reservation", id, rec.History)
			}
		}
		h.checkStats(h.store)
	})
}

// The jobs taken from the source and not yet ingested are bounded, even
// when they all fall on one shard (here: one ID whose first write hangs),
// and an idle Engine keeps no goroutine for its shards.
func TestEngineIngestBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		gate := make(chan struct{})
		h.start(blockAdd{Store: h.store, id: "slow", gate: gate})
		synctest.Wait()
		idle := runtime.NumGoroutine()

		r := h.user.Volume("slow", testNode, 1, time.Now(), time.Hour)
		total := engine.IngestInFlight + 10
		acks := make(chan error, total)
		var sent atomic.Int64
		go func() {
			for range total {
				if h.src.Send(h.ctx, provision.ReservationJob{Reservation: r, Ack: func(err error) { acks <- err }}) != nil {
					return
				}
				sent.Add(1)
			}
		}()
		synctest.Wait()
		// Besides the jobs in flight, the source's relay and the Engine's
		// loop may each hold one.
		if n := int(sent.Load()); n < engine.IngestInFlight || n > engine.IngestInFlight+2 {
			t.Fatalf("%d jobs taken while the first hangs, want %d (+2)", n, engine.IngestInFlight)
		}
		close(gate)
		for i := range total {
			if err := <-acks; err != nil {
				t.Fatalf("job %d: %v", i, err)
			}
		}
		synctest.Wait()
		if n := runtime.NumGoroutine(); n > idle {
			t.Errorf("%d goroutines once idle again, %d before", n, idle)
		}
		if got := h.prims.Provisions("slow"); got != 1 {
			t.Errorf("provisioned %d times, want once", got)
		}
	})
}
