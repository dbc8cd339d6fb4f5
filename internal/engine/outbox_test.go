package engine_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// feedbackers are the two delivery paths of the outbox: one Feedback call
// per result, and FeedbackBatch for consecutive results.
var feedbackers = []struct {
	name  string
	batch bool
}{{"one-by-one", false}, {"batch", true}}

// useFeedbacker makes h deliver through a plain Feedbacker or a
// BatchFeedbacker (returned, nil for the plain one).
func useFeedbacker(h *harness, batch bool) *provisiontest.BatchFeedbacker {
	if !batch {
		return nil
	}
	bf := provisiontest.NewBatchFeedbacker()
	h.fb, h.opts.Feedbacker = bf.Feedbacker, bf
	return bf
}

// ackCounter counts the Ack calls of a store.
type ackCounter struct {
	provision.Store
	mu    sync.Mutex
	calls []int // entries per call
}

func (s *ackCounter) Ack(seqs ...uint64) error {
	s.mu.Lock()
	s.calls = append(s.calls, len(seqs))
	s.mu.Unlock()
	return s.Store.Ack(seqs...)
}

func (s *ackCounter) Calls() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// enqueueResults puts n results (r0, r1, …) in the outbox of s.
func enqueueResults(t testing.TB, s provision.Store, n int) {
	t.Helper()
	for i := range n {
		res := &provision.Result{Type: provision.VolumeReservation, ID: fmt.Sprint("r", i), NodeID: testNode,
			State: provision.StateOk, Created: time.Now()}
		if err := s.Enqueue(&provision.OutboxEntry{Kind: provision.OutboxResult, Result: res, Created: res.Created}); err != nil {
			t.Fatal(err)
		}
	}
}

// A pass delivers what it read (consecutive results in one request when
// the explorer takes batches) and acknowledges it in one store write.
func TestOutboxAcknowledgesAPassAtOnce(t *testing.T) {
	for _, fb := range feedbackers {
		t.Run(fb.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, nil)
				bf := useFeedbacker(h, fb.batch)
				enqueueResults(t, h.store, 20)
				acks := &ackCounter{Store: h.store}
				h.start(acks)
				settle(0)
				if got := len(h.fb.Results()); got != 20 {
					t.Fatalf("%d results delivered, want 20", got)
				}
				for i, res := range h.fb.Results() {
					if want := fmt.Sprint("r", i); res.ID != want {
						t.Errorf("result %d is %s, want %s", i, res.ID, want)
					}
				}
				// 20 results and the stats of the start.
				if got := acks.Calls(); !slices.Equal(got, []int{21}) {
					t.Errorf("acknowledged in calls of %v entries, want one of 21", got)
				}
				if bf != nil {
					if got := bf.Batches(); !slices.Equal(got, []int{20}) {
						t.Errorf("batches of %v results, want one of 20", got)
					}
				}
			})
		})
	}
}

// OutboxRate counts results, not requests: a batch waits for a token per
// result and carries at most OutboxBurst of them.
func TestOutboxRateCountsResults(t *testing.T) {
	for _, fb := range feedbackers {
		t.Run(fb.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, func(o *engine.Options) {
					o.OutboxRate = rate.Limit(10)
					o.OutboxBurst = 5
				})
				bf := useFeedbacker(h, fb.batch)
				enqueueResults(t, h.store, 20)
				h.start(nil)
				settle(750 * time.Millisecond)
				// The burst of 5 at once, then 10/s.
				if got := len(h.fb.Results()); got > 5+7 {
					t.Errorf("%d results delivered within 750ms at 10/s with a burst of 5", got)
				}
				settle(3 * time.Second)
				if got := len(h.fb.Results()); got != 20 {
					t.Errorf("%d results delivered after 3.75s, want 20", got)
				}
				if bf != nil {
					for _, n := range bf.Batches() {
						if n > 5 {
							t.Errorf("a batch of %d results, more than the burst of 5", n)
						}
					}
				}
			})
		})
	}
}

// A refused result is dropped and logged, a flaky one retried; the
// others are delivered around them, the outbox ends empty, and the last
// delivery of each result follows the outbox order.
func TestOutboxRefusedAndFlakyResults(t *testing.T) {
	for _, fb := range feedbackers {
		t.Run(fb.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, nil)
				useFeedbacker(h, fb.batch)
				h.fb.Refuse("r3")
				h.fb.Flaky("r7", 2)
				enqueueResults(t, h.store, 12)
				h.start(nil)
				settle(engine.DefaultBackoffMax)
				if d, _ := h.store.Depth(); d != 0 {
					t.Errorf("outbox depth %d, want 0", d)
				}
				last := map[string]int{} // id → position of its last delivery
				for i, res := range h.fb.Results() {
					last[res.ID] = i
				}
				if _, ok := last["r3"]; ok {
					t.Error("the refused result was delivered")
				}
				prev := -1
				for i := range 12 {
					id := fmt.Sprint("r", i)
					if id == "r3" {
						continue
					}
					pos, ok := last[id]
					if !ok {
						t.Errorf("%s was never delivered", id)
						continue
					}
					if pos < prev {
						t.Errorf("%s last delivered at %d, before its predecessor (%d)", id, pos, prev)
					}
					prev = pos
				}
			})
		})
	}
}

// An explorer that refuses batches as a whole still gets every result, one
// by one.
func TestOutboxBatchRefusedFallsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		bf := useFeedbacker(h, true)
		bf.RefuseBatches(true)
		h.fb.Refuse("r2")
		enqueueResults(t, h.store, 6)
		h.start(nil)
		settle(0)
		var ids []string
		for _, res := range h.fb.Results() {
			ids = append(ids, res.ID)
		}
		if want := []string{"r0", "r1", "r3", "r4", "r5"}; !slices.Equal(ids, want) {
			t.Errorf("delivered %v, want %v", ids, want)
		}
		if d, _ := h.store.Depth(); d != 0 {
			t.Errorf("outbox depth %d, want 0", d)
		}
		if len(bf.Batches()) == 0 {
			t.Error("no batch was tried")
		}
	})
}

// An explorer outage with batches loses nothing either: the whole batch
// is retried until the explorer is back.
func TestOutboxBatchExplorerDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		useFeedbacker(h, true)
		h.fb.SetDown(true)
		h.start(nil)
		for i := range 5 {
			h.deliver(h.user.Volume(fmt.Sprintf("v%d", i), testNode, 1, time.Now(), 24*time.Hour))
		}
		settle(time.Hour)
		if n := len(h.fb.Results()); n != 0 {
			t.Fatalf("%d results delivered while down", n)
		}
		h.fb.SetDown(false)
		settle(engine.DefaultBackoffMax)
		for i := range 5 {
			id := fmt.Sprintf("v%d", i)
			rec := h.wantState(id, provision.Deployed)
			if last := h.lastResult(id); last.Signature != rec.Result.Signature {
				t.Errorf("last result of %s is not the stored one", id)
			}
		}
		if d, _ := h.store.Depth(); d != 0 {
			t.Errorf("outbox depth %d, want 0", d)
		}
	})
}

// refusals counts the Refused hooks per reason.
type refusals struct {
	engine.NopHooks
	mu sync.Mutex
	n  map[string]int
}

func (h *refusals) Refused(kind provision.OutboxKind, reason string) {
	h.mu.Lock()
	h.n[string(kind)+"/"+reason]++
	h.mu.Unlock()
}

func (h *refusals) count(key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[key]
}

// A result the explorer refuses for good is dropped from the outbox, and
// the refusal is counted and kept on the reservation's record; a result
// the explorer keeps failing temporarily is retried until it is taken,
// however many times that takes.
func TestOutboxRefusalRecordedAndTemporaryRetriedForever(t *testing.T) {
	for _, fb := range feedbackers {
		t.Run(fb.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hooks := &refusals{n: map[string]int{}}
				h := newHarness(t, func(o *engine.Options) { o.Hooks = hooks })
				useFeedbacker(h, fb.batch)
				h.fb.Refuse("v0")
				h.fb.Flaky("v1", 40) // far beyond any attempt count, hours of backoff
				h.start(nil)
				for i := range 3 {
					h.deliver(h.user.Volume(fmt.Sprintf("v%d", i), testNode, 1, time.Now(), 48*time.Hour))
				}
				settle(40 * engine.DefaultBackoffMax)
				rec := h.wantState("v0", provision.Deployed)
				if rec.Refused == nil || rec.Refused.Reason != "test-refused" || rec.Refused.State != provision.StateOk ||
					!rec.Refused.Created.Equal(rec.Result.Created) || rec.Refused.Message == "" || rec.Refused.At.IsZero() {
					t.Fatalf("record of the refused result: %+v", rec.Refused)
				}
				if n := hooks.count("result/test-refused"); n != 1 {
					t.Fatalf("%d refusals counted, want 1", n)
				}
				for _, id := range []string{"v1", "v2"} {
					rec := h.wantState(id, provision.Deployed)
					if rec.Refused != nil {
						t.Errorf("%s: refused %+v", id, rec.Refused)
					}
					if last := h.lastResult(id); last == nil || last.Signature != rec.Result.Signature {
						t.Errorf("%s: its result never arrived", id)
					}
				}
				if d, _ := h.store.Depth(); d != 0 {
					t.Errorf("outbox depth %d, want 0", d)
				}
			})
		})
	}
}

// A refused result that answers another reservation under a live record's
// id (a replay or an impostor the node refused) is counted, but leaves the
// live record alone.
func TestOutboxRefusalOfAnotherDigestLeavesTheRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hooks := &refusals{n: map[string]int{}}
		h := newHarness(t, func(o *engine.Options) { o.Hooks = hooks })
		h.start(nil)
		h.deliver(h.user.Volume("v0", testNode, 1, time.Now(), 48*time.Hour))
		settle(time.Minute)
		h.wantState("v0", provision.Deployed)
		h.fb.Refuse("v0")
		h.stop() // the outbox reads the entry at the next start
		other := &provision.Result{Type: provision.VolumeReservation, ID: "v0", NodeID: testNode, Digest: "another-digest",
			State: provision.StateError, Created: time.Now()}
		if err := h.store.Enqueue(&provision.OutboxEntry{Kind: provision.OutboxResult, Result: other, Created: other.Created}); err != nil {
			t.Fatal(err)
		}
		h.start(nil)
		settle(time.Minute)
		if n := hooks.count("result/test-refused"); n != 1 {
			t.Fatalf("%d refusals counted, want 1", n)
		}
		if rec := h.wantState("v0", provision.Deployed); rec.Refused != nil {
			t.Fatalf("the live record took another reservation's refusal: %+v", rec.Refused)
		}
	})
}
