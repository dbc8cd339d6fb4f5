package engine_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/internal/source"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// crashScenario is the work every crash run delivers: a network, a volume,
// a container on both, and a volume that is deleted again.
func crashScenario(u *provisiontest.User, at time.Time) []*provision.Reservation {
	n := u.Network("n", testNode, "net", at, 24*time.Hour)
	v := u.Volume("v", testNode, 2, at, 24*time.Hour)
	c := u.Container("c", testNode, 1, 512, provision.NetworkID(u.ID, "net"), []string{"v"}, at, 24*time.Hour)
	d := u.Volume("d", testNode, 1, at, 24*time.Hour)
	return []*provision.Reservation{n, v, c, d, u.Delete(d)}
}

// runScenario delivers the scenario, waiting for the Engine to go idle
// between items (so that a delete follows the deployment it deletes); it
// stops at the first refused delivery (the crash).
func runScenario(h *harness, rs []*provision.Reservation) {
	for _, r := range rs {
		if err := h.src.Deliver(h.ctx, r); err != nil {
			return
		}
		synctest.Wait()
	}
}

// A crash between any two writes (provision returned / state written /
// outbox written / acknowledged) converges after a restart: every record
// reaches its final state, the side effects exist exactly for the live
// records, no result is lost and the stats are the pure sum of the active
// set. The only duplicate side effect allowed is a provision re-run after
// a crash between "provision returned" and "deployed written": the
// primitives are idempotent and absorb it; the test counts them.
func TestEngineCrashRecovery(t *testing.T) {
	var writes int
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		cs := provisiontest.NewCrashStore(h.store, -1)
		h.start(cs)
		runScenario(h, crashScenario(h.user, time.Now()))
		settle(0)
		writes = cs.Writes()
	})
	if writes < 10 {
		t.Fatalf("a clean run made %d writes; the scenario is broken", writes)
	}
	duplicates := 0
	for after := 0; after <= writes; after++ {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, nil)
			cs := provisiontest.NewCrashStore(h.store, after)
			cs.OnCrash = func() { h.cancel() } // a dead process does nothing more
			h.start(cs)
			rs := crashScenario(h.user, time.Now())
			runScenario(h, rs)
			settle(0)
			h.stop()

			// The source redelivers what was not acknowledged; here, all.
			h.start(nil)
			runScenario(h, rs)
			settle(engine.DefaultBackoffMax)

			for id, want := range map[string]provision.State{"n": provision.Deployed, "v": provision.Deployed, "c": provision.Deployed, "d": provision.Deleted} {
				rec := h.wantState(id, want)
				last := h.lastResult(id)
				if last.Signature != rec.Result.Signature {
					t.Errorf("crash at write %d: last delivered result of %s is %s %q, stored %s %q",
						after, id, last.State, last.Message, rec.Result.State, rec.Result.Message)
				}
				if n := h.prims.Provisions(id); n < 1 || n > 2 {
					t.Errorf("crash at write %d: %s provisioned %d times", after, id, n)
				} else {
					duplicates += n - 1
				}
			}
			if live := h.prims.Live(); !slices.Equal(live, []string{"c", "n", "v"}) {
				t.Errorf("crash at write %d: live workloads %v, want [c n v]", after, live)
			}
			if d, _ := h.store.Depth(); d != 0 {
				t.Errorf("crash at write %d: %d outbox entries left", after, d)
			}
			h.checkStats(h.store)
			stats := h.fb.Stats()
			sum, _, _ := activeSet(t, h.store)
			if len(stats) == 0 || !unitsClose(stats[len(stats)-1].Used, sum) {
				t.Errorf("crash at write %d: last delivered stats do not match the active set %+v", after, sum)
			}
		})
	}
	t.Logf("%d crash points, %d provisions re-run after a crash (absorbed by idempotent primitives)", writes+1, duplicates)
}

// The cursor advances only after a batch is persisted; a poll error never
// moves it, a bad item is answered and passed, and a restart polls from
// the stored cursor instead of replaying the history.
func TestPollSourceCursor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		poller := provisiontest.NewPoller()
		var pollErrs atomic.Int32
		newSource := func() {
			ps := source.NewPoll(poller, h.store, "explorer", source.PollOptions{
				OnError: func(error) { pollErrs.Add(1) },
			})
			h.opts.Source = ps
		}
		newSource()
		for i := range 3 {
			poller.Append(h.user.Volume(string(rune('a'+i)), testNode, 1, time.Now(), 24*time.Hour))
		}
		poller.FailNext(errors.New("connection refused"), errors.New("connection reset"))
		h.start(nil)
		settle(0)
		if cur, _ := h.store.Cursor("explorer"); cur != 0 || pollErrs.Load() != 1 {
			t.Fatalf("cursor %d after a failed poll (%d errors), want 0", cur, pollErrs.Load())
		}
		settle(10 * time.Second) // the backoffs pass
		if cur, _ := h.store.Cursor("explorer"); cur != 3 {
			t.Fatalf("cursor %d after the batch, want 3", cur)
		}
		if froms := poller.Froms(); len(froms) < 4 || !slices.Equal(froms[:4], []uint64{0, 0, 0, 3}) {
			t.Fatalf("polls from %v, want 0 until the batch was persisted, then 3", froms)
		}
		if pollErrs.Load() != 2 {
			t.Errorf("%d poll errors reported, want 2", pollErrs.Load())
		}
		// New handed itself to the source: the failures reached it
		// without any wiring by the caller.
		if got := h.eng.Status().LastPollError; got != "connection reset" {
			t.Errorf("engine's last poll error %q, want the source's last failure", got)
		}

		poller.AppendBad(&provision.Reservation{ID: "garbage"}, provision.Permanent(errors.New("cannot decode item")))
		poller.Append(h.user.Volume("d", testNode, 1, time.Now(), 24*time.Hour))
		settle(time.Second)
		if cur, _ := h.store.Cursor("explorer"); cur != 5 {
			t.Fatalf("cursor %d after a bad item, want 5", cur)
		}
		res := h.lastResult("garbage")
		if res.State != provision.StateError || res.Message != "cannot decode item" {
			t.Errorf("result of the bad item %+v", res)
		}
		h.wantState("d", provision.Deployed)
		for _, from := range poller.Froms() {
			if from == 1 {
				t.Errorf("the cursor was reset: polls from %v", poller.Froms())
			}
		}

		h.stop()
		seen := len(poller.Froms())
		newSource()
		h.start(nil)
		settle(time.Minute) // an empty long-poll: caught up
		if froms := poller.Froms()[seen:]; len(froms) == 0 || froms[0] != 5 {
			t.Fatalf("after restart polls from %v, want 5 first", froms)
		}
		for _, id := range []string{"a", "b", "c", "d"} {
			if n := h.prims.Provisions(id); n != 1 {
				t.Errorf("%s provisioned %d times", id, n)
			}
		}
		if !h.eng.Status().CaughtUp {
			t.Errorf("not caught up after an empty poll")
		}
	})
}

// Reconcile repairs a vanished workload, counts consecutive failures
// (reset by a success) and fails a workload after MaxInspectFailures with
// one signed result.
func TestEngineReconcile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *engine.Options) {
			o.ResyncInterval = time.Minute
			o.MaxInspectFailures = 3
		})
		h.start(nil)
		h.deliver(h.user.Volume("gone", testNode, 1, time.Now(), 24*time.Hour))
		h.deliver(h.user.Volume("sick", testNode, 1, time.Now(), 24*time.Hour))
		settle(0)

		h.prims.Vanish("gone")
		settle(time.Minute)
		h.wantState("gone", provision.Deployed)
		if n := h.prims.Provisions("gone"); n != 2 || !slices.Contains(h.prims.Live(), "gone") {
			t.Errorf("vanished workload provisioned %d times (live %v), want repaired", n, h.prims.Live())
		}

		sick := errors.New("health check failed")
		h.prims.SetUnhealthy("sick", sick)
		settle(2 * time.Minute)
		if rec := h.wantState("sick", provision.Deployed); rec.Failures != 2 {
			t.Fatalf("failures %d after two bad inspections, want 2", rec.Failures)
		}
		h.prims.SetUnhealthy("sick", nil)
		settle(time.Minute)
		if rec := h.record("sick"); rec.Failures != 0 {
			t.Fatalf("failures %d after a good inspection, want 0", rec.Failures)
		}
		h.prims.SetUnhealthy("sick", sick)
		settle(2 * time.Minute)
		h.wantState("sick", provision.Deployed)
		settle(time.Minute)
		h.wantState("sick", provision.Failed)
		settle(5 * time.Minute)
		var errs int
		for _, r := range h.fb.ResultsFor("sick") {
			if r.State == provision.StateError {
				errs++
			}
		}
		if errs != 1 {
			t.Errorf("%d error results for the failed workload, want 1", errs)
		}
		if h.prims.Decommissions("sick") != 1 {
			t.Errorf("leftovers of the failed workload decommissioned %d times, want 1", h.prims.Decommissions("sick"))
		}
		h.checkStats(h.store)
	})
}

// Cleanup removes only listed resources without a live record, and
// nothing when the store cannot answer.
func TestEngineCleanup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		h.deliver(h.user.Volume("v1", testNode, 1, time.Now(), 24*time.Hour))
		h.deliver(h.user.Network("n1", testNode, "net", time.Now(), 24*time.Hour))
		h.prims.FailProvision("f1", 1, false)
		h.deliver(h.user.Volume("f1", testNode, 1, time.Now(), 24*time.Hour))
		settle(0)
		netID := provision.NetworkID(h.user.ID, "net")
		live := []provision.Resource{
			{Type: provision.VolumeReservation, ID: "v1", Name: "prv-v1"},
			{Type: provision.NetworkReservation, ID: netID, Name: "prv-" + netID},
		}
		orphans := []provision.Resource{
			{Type: provision.VolumeReservation, ID: "v9", Name: "prv-v9"},
			{Type: provision.VolumeReservation, ID: "f1", Name: "prv-f1"},
			{Type: provision.NetworkReservation, ID: "00000000deadbeef", Name: "prv-00000000deadbeef"},
		}
		h.prims.SetInventory(append(slices.Clone(live), orphans...)...)
		if err := h.src.CaughtUp(h.ctx); err != nil {
			t.Fatal(err)
		}
		settle(0)
		if got := h.prims.Removed(); !slices.Equal(got, orphans) {
			t.Fatalf("removed %v, want exactly the orphans %v", got, orphans)
		}

		h.prims.SetInventory(orphans...)
		failing := engine.New(engine.Options{
			NodeID: testNode, Source: h.src, Store: failGet{Store: h.store, id: "v9"},
			Primitives: h.prims, Signer: h.signer, Statser: h.statser, Feedbacker: h.fb,
		})
		if err := failing.CleanupResources(context.Background()); !errors.Is(err, errTransient) {
			t.Fatalf("cleanup with a failing store: %v, want the store's error", err)
		}
		if got := h.prims.Removed(); len(got) != len(orphans) {
			t.Fatalf("cleanup removed %v despite the store error", got[len(orphans):])
		}
		h.prims.FailList(errors.New("cannot list"))
		if err := h.eng.CleanupResources(context.Background()); err == nil {
			t.Fatal("cleanup ignored a failing List")
		}
		if got := h.prims.Removed(); len(got) != len(orphans) {
			t.Fatalf("cleanup removed %v after a failed List", got[len(orphans):])
		}
	})
}

// The decommission source fires at the expiry in fake time (and earlier
// when a shorter reservation arrives), the workload is decommissioned and
// a "deleted" result sent.
func TestEngineExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		expiry := source.NewDecommission(h.store, nil, source.DecommissionOptions{MaxWait: 24 * time.Hour})
		h.opts.Source = source.Combine(h.src, expiry)
		h.start(nil)
		start := time.Now()
		h.deliver(h.user.Volume("long", testNode, 1, start, 2*time.Hour))
		settle(time.Minute)
		h.deliver(h.user.Volume("short", testNode, 1, time.Now(), 10*time.Minute))
		settle(0)
		h.wantState("short", provision.Deployed)
		settle(10*time.Minute - time.Second)
		h.wantState("short", provision.Deployed)
		settle(time.Second)
		h.wantState("short", provision.Deleted)
		h.wantState("long", provision.Deployed)
		settle(time.Until(start.Add(2*time.Hour)) - time.Second)
		h.wantState("long", provision.Deployed)
		settle(time.Second)
		rec := h.wantState("long", provision.Deleted)
		res := h.lastResult("long")
		if res.State != provision.StateDeleted || res.Message != "expired" || res.Signature != rec.Result.Signature {
			t.Errorf("result %+v, want the stored deleted result saying expired", res)
		}
		for _, id := range []string{"long", "short"} {
			if h.prims.Decommissions(id) != 1 {
				t.Errorf("%s decommissioned %d times, want 1", id, h.prims.Decommissions(id))
			}
		}
		h.checkStats(h.store)
	})
}

// A decommission that fails keeps the record deleting and retries until
// it succeeds: a workload is never forgotten while it may exist.
func TestEngineDecommissionRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		r := h.user.Volume("v", testNode, 1, time.Now(), 24*time.Hour)
		h.deliver(r)
		settle(0)
		h.prims.FailDecommission("v", -1, false) // even permanent failures
		h.deliver(h.user.Delete(r))
		settle(10 * time.Minute)
		if rec := h.wantState("v", provision.Deleting); rec.Attempts < 3 {
			t.Fatalf("%d attempts after 10 minutes", rec.Attempts)
		}
		h.restart()
		settle(time.Hour)
		h.wantState("v", provision.Deleting)
		h.prims.FailDecommission("v", 0, false)
		settle(engine.DefaultBackoffMax)
		h.wantState("v", provision.Deleted)
		if h.prims.Decommissions("v") != 1 || len(h.prims.Live()) != 0 {
			t.Errorf("decommissions %d, live %v", h.prims.Decommissions("v"), h.prims.Live())
		}
		h.checkStats(h.store)
	})
}

// DecommissionCached gives up on a workload: failed, one error result with
// the reason, resources removed.
func TestEngineDecommissionCached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		h.deliver(h.user.Container("c", testNode, 1, 256, "", nil, time.Now(), 24*time.Hour))
		settle(0)
		if err := h.eng.DecommissionCached(h.ctx, "c", "crash loop: 5 exits in 1m"); err != nil {
			t.Fatal(err)
		}
		settle(0)
		h.wantState("c", provision.Failed)
		res := h.lastResult("c")
		if res.State != provision.StateError || res.Message != "crash loop: 5 exits in 1m" {
			t.Errorf("result %+v", res)
		}
		if h.prims.Decommissions("c") != 1 {
			t.Errorf("decommissioned %d times", h.prims.Decommissions("c"))
		}
		if err := h.eng.DecommissionCached(h.ctx, "c", "again"); err != nil || len(h.fb.ResultsFor("c")) != 2 {
			t.Errorf("second give-up: %v, results %d (want ok + one error)", err, len(h.fb.ResultsFor("c")))
		}
		if err := h.eng.DecommissionCached(h.ctx, "nope", "x"); !errors.Is(err, provision.ErrNotFound) {
			t.Errorf("unknown id: %v", err)
		}
		h.checkStats(h.store)
	})
}
