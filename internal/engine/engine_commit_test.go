package engine_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
)

// failQueued is a store whose first queued write of id into provisioning
// waits for gate and then fails.
type failQueued struct {
	provision.Store
	id     string
	gate   chan struct{}
	failed atomic.Bool
}

func (s *failQueued) fail(rec *provision.Record) func() error {
	if rec.ID() != s.id || rec.State != provision.Provisioning || s.failed.Swap(true) {
		return nil
	}
	return func() error {
		<-s.gate
		return errTransient
	}
}

func (s *failQueued) QueueAdd(rec *provision.Record, out ...*provision.OutboxEntry) func() error {
	if wait := s.fail(rec); wait != nil {
		return wait
	}
	return s.Store.(provision.WriteQueuer).QueueAdd(rec, out...)
}

func (s *failQueued) QueueSave(rec *provision.Record, out ...*provision.OutboxEntry) func() error {
	if wait := s.fail(rec); wait != nil {
		return wait
	}
	return s.Store.(provision.WriteQueuer).QueueSave(rec, out...)
}

// A write that joins the active set (here the admission of a new
// reservation at ingest) is queued under the tally lock and awaited
// outside of it: later writes are queued meanwhile and count it in their
// stats. When it fails, the tally is put back and fresh stats are
// enqueued, so the last delivered stats match the active set; the source
// gets the error, and the reservation is admitted when it comes again.
func TestEngineQueuedWriteFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *engine.Options) { o.Workers = 1 })
		store := &failQueued{Store: h.store, id: "slow", gate: make(chan struct{})}
		release := sync.OnceFunc(func() { close(store.gate) }) // the write fails
		defer release()
		h.start(store)
		slow := h.user.Volume("slow", testNode, 3, time.Now(), 24*time.Hour)
		slowAck := make(chan error, 1)
		if err := h.src.Send(h.ctx, provision.ReservationJob{Reservation: slow, Ack: func(err error) { slowAck <- err }}); err != nil {
			t.Fatal(err)
		}
		settle(0) // its write to provisioning waits
		fast := "fast"
		for i := 0; h.eng.IngestShard(fast) == h.eng.IngestShard("slow"); i++ {
			fast = fmt.Sprint("fast", i) // not held up behind "slow" in its shard
		}
		h.deliver(h.user.Volume(fast, testNode, 1, time.Now(), 24*time.Hour))
		settle(0)
		h.wantState(fast, provision.Deployed)
		if _, err := h.store.Get("slow"); !errors.Is(err, provision.ErrNotFound) {
			t.Fatalf("slow is stored before its write ended: %v", err)
		}
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

		release()
		if err := <-slowAck; !errors.Is(err, errTransient) {
			t.Fatalf("the source got %v for the failed write, want %v", err, errTransient)
		}
		settle(0)
		h.checkStats(h.store)
		if used := lastStats(); used.SRU != 1 {
			t.Errorf("last delivered stats after the failed write: used %+v, want 1 SRU (%s alone)", used, fast)
		}

		h.deliver(slow) // the source sends it again
		settle(0)
		h.wantState("slow", provision.Deployed)
		h.checkStats(h.store)
		if used := lastStats(); used.SRU != 4 {
			t.Errorf("last delivered stats: used %+v, want 4 SRU", used)
		}
	})
}
