package provision_test

import (
	"sync"
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
// awaited outside of it, and not by the worker (there is one here): later
// writes are queued meanwhile and count it in their stats. When it fails, the tally is put back and fresh stats are
// enqueued: the last delivered stats match the active set, and the
// reservation is tried again.
func TestEngineQueuedWriteFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *provision.Options) { o.Workers = 1 })
		store := &failQueued{Store: h.store, id: "slow", gate: make(chan struct{})}
		release := sync.OnceFunc(func() { close(store.gate) }) // the write fails
		defer release()
		h.start(store)
		h.deliver(h.user.Volume("slow", testNode, 3, time.Now(), 24*time.Hour))
		settle(0) // its write to provisioning waits
		h.deliver(h.user.Volume("fast", testNode, 1, time.Now(), 24*time.Hour))
		settle(0)
		// Its write to provisioning is made; it ends after the slow one.
		h.wantState("fast", provision.Provisioning)
		h.wantState("slow", provision.Accepted)
		lastStats := func() provision.Units {
			st := h.fb.Stats()
			if len(st) == 0 {
				t.Fatal("no stats delivered")
			}
			return st[len(st)-1].Used
		}
		entries, err := h.store.Pending(0)
		if err != nil {
			t.Fatal(err)
		}
		var pending *provision.Stats
		for _, en := range entries {
			if en.Kind == provision.OutboxStats {
				pending = en.Stats
			}
		}
		if pending == nil || pending.Used.SRU != 4 {
			t.Fatalf("stats enqueued while the write was pending: %+v, want 4 SRU used (both)", pending)
		}

		release()
		settle(0)
		h.wantState("slow", provision.Accepted)
		h.wantState("fast", provision.Deployed)
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
