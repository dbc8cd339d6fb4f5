package provision_test

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// failQueued is a store whose first queued save of id into provisioning
// waits for gate and then fails.
type failQueued struct {
	provision.Store
	id     string
	gate   chan struct{}
	failed atomic.Bool
}

func (s *failQueued) QueueSave(rec *provision.Record, out ...*provision.OutboxEntry) func() error {
	if rec.ID() == s.id && rec.State == provision.Provisioning && !s.failed.Swap(true) {
		return func() error {
			<-s.gate
			return errTransient
		}
	}
	return s.Store.(provision.SaveQueuer).QueueSave(rec, out...)
}

// A write that joins the active set is queued under the tally lock and
// awaited outside of it, so other writes go on meanwhile and count it in
// their stats. When it fails, the tally is put back and fresh stats are
// enqueued: the last delivered stats match the active set, and the
// reservation is tried again.
func TestEngineQueuedWriteFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		store := &failQueued{Store: h.store, id: "slow", gate: make(chan struct{})}
		h.start(store)
		h.deliver(h.user.Volume("slow", testNode, 3, time.Now(), 24*time.Hour))
		settle(0) // its write to provisioning waits
		h.deliver(h.user.Volume("fast", testNode, 1, time.Now(), 24*time.Hour))
		settle(0)
		h.wantState("fast", provision.Deployed)
		h.wantState("slow", provision.Accepted)
		lastStats := func() provision.Units {
			st := h.fb.Stats()
			if len(st) == 0 {
				t.Fatal("no stats delivered")
			}
			return st[len(st)-1].Used
		}
		if used := lastStats(); used.SRU != 4 {
			t.Fatalf("stats delivered while the write was pending: used %+v, want 4 SRU (both)", used)
		}

		close(store.gate) // the write fails
		settle(0)
		h.wantState("slow", provision.Accepted)
		h.checkStats(h.store)
		if sum, _, _ := activeSet(t, h.store); !unitsClose(lastStats(), sum) {
			t.Errorf("last delivered stats %+v after the failed write, active set %+v", lastStats(), sum)
		}

		settle(provision.DefaultBackoffMax) // tried again
		h.wantState("slow", provision.Deployed)
		h.checkStats(h.store)
		if used := lastStats(); used.SRU != 4 {
			t.Errorf("last delivered stats: used %+v, want 4 SRU", used)
		}
	})
}
