package engine_test

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// The predecessor provisioned twice when the explorer repeated itself (a
// 30-minute in-memory "seen" cache). Here a repeat is answered from the
// record, across restarts.
func TestEngineRepeatedDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		r := h.user.Volume("v1", testNode, 4, time.Now(), 24*time.Hour)
		for i := range 100 {
			h.deliver(r)
			if i%10 == 9 {
				h.restart()
			}
		}
		settle(0)
		if n := h.prims.Provisions("v1"); n != 1 {
			t.Errorf("provisioner ran %d times, want 1", n)
		}
		h.wantState("v1", provision.Deployed)
		results := h.fb.ResultsFor("v1")
		if len(results) < 2 {
			t.Fatalf("%d results delivered, want the result and re-sends of it", len(results))
		}
		distinct := map[string]bool{}
		for _, res := range results {
			distinct[res.Signature] = true
			if res.State != provision.StateOk || res.Version != r.Version {
				t.Errorf("result %+v, want ok for version %d", res, r.Version)
			}
		}
		if len(distinct) != 1 {
			t.Errorf("%d distinct results for one version, want 1", len(distinct))
		}
		h.checkStats(h.store)
	})
}

// An explorer outage loses nothing: the outbox keeps every result until it
// is back, and delivers them in order.
func TestEngineFeedbackerDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.fb.SetDown(true)
		h.start(nil)
		var rs []*provision.Reservation
		for i := range 5 {
			r := h.user.Volume(fmt.Sprintf("v%d", i), testNode, 1, time.Now(), 24*time.Hour)
			rs = append(rs, r)
			h.deliver(r)
		}
		settle(0)
		for _, r := range rs[:2] {
			h.deliver(h.user.Delete(r))
		}
		settle(0)
		before, err := h.store.Depth()
		if err != nil {
			t.Fatal(err)
		}
		settle(6 * time.Hour)
		after, _ := h.store.Depth()
		// 5 ok + 2 deleted results, plus the latest stats.
		if before < 7 || after != before {
			t.Errorf("outbox depth %d, then %d after 6h down; want at least 7 kept", before, after)
		}
		if got := h.eng.Status().OutboxDepth; got != after {
			t.Errorf("status outbox depth %d, store %d", got, after)
		}
		if len(h.fb.Results()) != 0 || h.fb.Failures() == 0 {
			t.Fatalf("delivered %d results while down (%d failures)", len(h.fb.Results()), h.fb.Failures())
		}
		h.fb.SetDown(false)
		settle(engine.DefaultBackoffMax)
		if d, _ := h.store.Depth(); d != 0 {
			t.Errorf("outbox depth %d after the explorer came back, want 0", d)
		}
		for i, r := range rs {
			var states []provision.ResultState
			for _, res := range h.fb.ResultsFor(r.ID) {
				states = append(states, res.State)
			}
			want := []provision.ResultState{provision.StateOk}
			if i < 2 {
				want = append(want, provision.StateDeleted)
			}
			if fmt.Sprint(states) != fmt.Sprint(want) {
				t.Errorf("results of %s: %v, want %v", r.ID, states, want)
			}
		}
		stats := h.fb.Stats()
		if len(stats) == 0 || stats[len(stats)-1].Workloads[provision.VolumeReservation] != 3 {
			t.Errorf("last delivered stats %+v, want 3 volumes", stats)
		}
	})
}

// One stuck workload blocked the predecessor's single engine goroutine for
// everybody. Here it holds one worker until its timeout, then retries and
// fails; the others complete meanwhile.
func TestEngineHungProvisioner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *engine.Options) {
			o.Workers = 2
			o.OpTimeout = time.Minute
			o.MaxAttempts = 2
		})
		h.prims.HangProvision("stuck", -1)
		h.start(nil)
		h.deliver(h.user.Volume("stuck", testNode, 1, time.Now(), 24*time.Hour))
		for i := range 5 {
			h.deliver(h.user.Volume(fmt.Sprintf("v%d", i), testNode, 1, time.Now(), 24*time.Hour))
		}
		settle(0)
		for i := range 5 {
			h.wantState(fmt.Sprintf("v%d", i), provision.Deployed)
		}
		h.wantState("stuck", provision.Provisioning)
		st := h.eng.Status()
		if st.Busy != 1 {
			t.Errorf("%d workers busy, want 1 (the stuck one)", st.Busy)
		}
		// The watchdog's measure: the stuck operation's start stays put
		// while time passes, and no operation starts or ends meanwhile.
		if st.OldestOp.IsZero() || st.LastProgress.Before(st.OldestOp) {
			t.Fatalf("status of a running operation: oldest %v, last progress %v", st.OldestOp, st.LastProgress)
		}
		settle(30 * time.Second)
		later := h.eng.Status()
		if !later.OldestOp.Equal(st.OldestOp) || !later.LastProgress.Equal(st.LastProgress) || time.Since(later.OldestOp) < 30*time.Second {
			t.Fatalf("after 30 s stuck: oldest %v, last progress %v (were %v, %v; now %v)", later.OldestOp, later.LastProgress, st.OldestOp, st.LastProgress, time.Now())
		}
		settle(30 * time.Second) // first attempt times out
		rec := h.record("stuck")
		if rec.State != provision.Provisioning || rec.Attempts != 1 {
			t.Fatalf("after the timeout: %s with %d attempts, want provisioning with 1", rec.State, rec.Attempts)
		}
		settle(engine.DefaultBackoffMax + time.Minute) // retry times out too
		rec = h.wantState("stuck", provision.Failed)
		res := h.fb.ResultsFor("stuck")
		if len(res) != 1 || res[0].State != provision.StateError || !strings.Contains(res[0].Message, "timed out") {
			t.Fatalf("results of stuck: %+v, want one error result about the timeout", res)
		}
		if !strings.Contains(rec.Result.Message, "giving up after 2 attempts") {
			t.Errorf("message %q does not say it gave up", rec.Result.Message)
		}
		if st := h.eng.Status(); !st.OldestOp.IsZero() || st.Busy != 0 || !st.LastProgress.After(later.LastProgress) {
			t.Errorf("status once idle: oldest %v, busy %d, last progress %v (want zero, 0, after %v)", st.OldestOp, st.Busy, st.LastProgress, later.LastProgress)
		}
		h.checkStats(h.store)
	})
}

// The predecessor's deletes starved behind new work. Deletes go to an
// urgent queue that workers always take from first.
func TestEngineDeletesDoNotStarve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *engine.Options) { o.Workers = 1 })
		h.start(nil)
		target := h.user.Volume("target", testNode, 1, time.Now(), 24*time.Hour)
		h.deliver(target)
		settle(0)
		h.wantState("target", provision.Deployed)
		// Every provision now takes a second of work.
		h.prims.OnProvision(func(*provision.Reservation) { time.Sleep(time.Second) })
		const backlog = 50
		for i := range backlog {
			h.deliver(h.user.Volume(fmt.Sprintf("b%02d", i), testNode, 1, time.Now(), 24*time.Hour))
		}
		h.deliver(h.user.Delete(target))
		settle(3 * time.Second)
		h.wantState("target", provision.Deleted)
		deployed := 0
		for i := range backlog {
			if h.record(fmt.Sprintf("b%02d", i)).State == provision.Deployed {
				deployed++
			}
		}
		if deployed >= backlog/2 {
			t.Errorf("%d of %d backlog items deployed before the delete was done", deployed, backlog)
		}
		if st := h.eng.Status(); st.Queued == 0 {
			t.Errorf("status shows no queue while the backlog drains: %+v", st)
		}
		settle(backlog * time.Second)
		for i := range backlog {
			h.wantState(fmt.Sprintf("b%02d", i), provision.Deployed)
		}
	})
}

// Admission refuses what does not fit, naming the short units, and
// capacity a delete frees can be used again.
func TestEngineAdmission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.statser.SetCapacity(provision.Capacity{
			Total:    provision.Units{CRU: 4, MRU: 8, SRU: 12, HRU: 0},
			Reserved: provision.Units{CRU: 1, MRU: 1, SRU: 2},
		})
		h.start(nil)
		a := h.user.Volume("a", testNode, 6, time.Now(), 24*time.Hour)
		h.deliver(a)
		settle(0)
		h.wantState("a", provision.Deployed)

		tests := []struct {
			name string
			r    *provision.Reservation
			want []string
		}{
			{"short-now", h.user.Volume("b", testNode, 6, time.Now(), time.Hour), []string{"not enough capacity: sru"}},
			{"never-fits", h.user.Volume("c", testNode, 20, time.Now(), time.Hour), []string{"sru", "more than the node's usable capacity"}},
			{"cpu-and-memory", h.user.Container("d", testNode, 8, 16<<10, "", nil, time.Now(), time.Hour), []string{"cru, mru"}},
		}
		for _, tc := range tests { // no t.Run inside a bubble
			h.deliver(tc.r)
			settle(0)
			rec := h.wantState(tc.r.ID, provision.Failed)
			res := h.lastResult(tc.r.ID)
			if res.State != provision.StateError || res.Message != rec.Result.Message {
				t.Fatalf("%s: result %+v, want the stored error result", tc.name, res)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.Message, w) {
					t.Errorf("%s: message %q does not name %q", tc.name, res.Message, w)
				}
			}
			if h.prims.Provisions(tc.r.ID) != 0 {
				t.Errorf("%s: refused reservation was provisioned", tc.name)
			}
		}
		h.deliver(h.user.Delete(a))
		settle(0)
		h.wantState("a", provision.Deleted)
		e := h.user.Volume("e", testNode, 6, time.Now(), 24*time.Hour)
		h.deliver(e)
		settle(0)
		h.wantState("e", provision.Deployed)
		h.checkStats(h.store)
		if used := h.eng.Status().Stats.Used; used.SRU != 6 {
			t.Errorf("used %+v, want 6 SRU", used)
		}
	})
}

// A container waits for the network and volumes it names, without holding
// a worker, and fails clearly when they fail, belong to another user or
// never come.
func TestEngineDependencies(t *testing.T) {
	other := provisiontest.NewUser(2)
	tests := []struct {
		name    string
		setup   func(h *harness) *provision.Reservation // returns the container
		wait    time.Duration
		want    provision.State
		message string
	}{
		{
			name: "waits-then-deploys",
			setup: func(h *harness) *provision.Reservation {
				c := h.user.Container("c", testNode, 1, 256, provision.NetworkID(h.user.ID, "net"), []string{"v"}, time.Now(), time.Hour)
				h.deliver(c)
				settle(time.Minute)
				h.wantState("c", provision.Accepted)
				if st := h.eng.Status(); st.Busy != 0 || st.Waiting != 1 {
					h.t.Errorf("while waiting: %+v, want no busy worker and one waiting", st)
				}
				h.deliver(h.user.Network("n", testNode, "net", time.Now(), time.Hour))
				h.deliver(h.user.Volume("v", testNode, 1, time.Now(), time.Hour))
				return c
			},
			want: provision.Deployed,
		},
		{
			name: "volume-failed",
			setup: func(h *harness) *provision.Reservation {
				h.prims.FailProvision("v", 1, false)
				h.deliver(h.user.Volume("v", testNode, 1, time.Now(), time.Hour))
				c := h.user.Container("c", testNode, 1, 256, "", []string{"v"}, time.Now(), time.Hour)
				h.deliver(c)
				return c
			},
			want:    provision.Failed,
			message: "volume v is error",
		},
		{
			name: "other-user",
			setup: func(h *harness) *provision.Reservation {
				h.deliver(other.Volume("v", testNode, 1, time.Now(), time.Hour))
				c := h.user.Container("c", testNode, 1, 256, "", []string{"v"}, time.Now(), time.Hour)
				h.deliver(c)
				return c
			},
			want:    provision.Failed,
			message: "volume v belongs to another user",
		},
		{
			name: "other-users-network",
			setup: func(h *harness) *provision.Reservation {
				h.deliver(other.Network("n", testNode, "net", time.Now(), time.Hour))
				c := h.user.Container("c", testNode, 1, 256, provision.NetworkID(other.ID, "net"), nil, time.Now(), time.Hour)
				h.deliver(c)
				return c
			},
			want:    provision.Failed,
			message: "belongs to another user",
		},
		{
			name: "not-a-volume",
			setup: func(h *harness) *provision.Reservation {
				h.deliver(h.user.Network("n", testNode, "net", time.Now(), time.Hour))
				c := h.user.Container("c", testNode, 1, 256, "", []string{"n"}, time.Now(), time.Hour)
				h.deliver(c)
				return c
			},
			want:    provision.Failed,
			message: "volume n is a network, not a volume",
		},
		{
			name: "never-comes",
			setup: func(h *harness) *provision.Reservation {
				c := h.user.Container("c", testNode, 1, 256, "", []string{"v"}, time.Now(), time.Hour)
				h.deliver(c)
				return c
			},
			wait:    engine.DefaultDependencyTimeout + time.Second,
			want:    provision.Failed,
			message: "volume v not deployed within 10m0s",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, nil)
				h.start(nil)
				c := tc.setup(h)
				settle(tc.wait)
				rec := h.wantState(c.ID, tc.want)
				if tc.want == provision.Failed {
					res := h.lastResult(c.ID)
					if len(h.fb.ResultsFor(c.ID)) != 1 || !strings.Contains(res.Message, tc.message) {
						t.Errorf("results %+v, want one saying %q", h.fb.ResultsFor(c.ID), tc.message)
					}
					if h.prims.Provisions(c.ID) != 0 {
						t.Errorf("container provisioned despite its dependencies")
					}
				} else if rec.Result.State != provision.StateOk {
					t.Errorf("result %+v, want ok", rec.Result)
				}
			})
		})
	}
}
