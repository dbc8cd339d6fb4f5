package engine_test

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// wantRefused fails unless id failed with a signed error result whose
// message holds each of want.
func (h *harness) wantRefused(id string, want ...string) *provision.Result {
	h.t.Helper()
	rec := h.wantState(id, provision.Failed)
	res := h.lastResult(id)
	if res.State != provision.StateError || rec.Result == nil || res.Message != rec.Result.Message || res.Verify(h.nodeKey()) != nil {
		h.t.Fatalf("result of %s: %+v, want the stored, signed error result", id, res)
	}
	for _, w := range want {
		if !strings.Contains(res.Message, w) {
			h.t.Fatalf("message of %s %q does not name %q", id, res.Message, w)
		}
	}
	if h.prims.Provisions(id) != 0 {
		h.t.Fatalf("refused %s was provisioned", id)
	}
	return res
}

// checkUsage fails unless the Engine's per-user usage is that of the
// store's active records.
func (h *harness) checkUsage() {
	h.t.Helper()
	_, _, fresh := activeSet(h.t, h.store)
	if got, want := h.eng.Usage(), fresh.Users(); !maps.Equal(got, want) {
		h.t.Fatalf("engine usage %v, active records %v", got, want)
	}
}

// A user's quota refuses the reservation past its CRU and the one past
// its workload count, each with a signed permanent error result that
// names the limit, the user, the use and the limit; another user has a
// quota of its own; a delete frees what it held; a restarted Engine
// derives the usage from the store again.
func TestEngineQuota(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		other := provisiontest.NewUser(2)
		h := newHarness(t, func(o *engine.Options) {
			o.Quotas = provision.Quotas{Default: provision.Quota{Units: provision.Units{CRU: 4}, Workloads: 3}}
		})
		h.start(nil)
		u := h.user
		now := time.Now()
		c1 := u.Container("c1", testNode, 3, 256, "", nil, now, time.Hour)
		h.deliver(c1)
		settle(0)
		h.wantState("c1", provision.Deployed)

		h.deliver(u.Container("c2", testNode, 2, 256, "", nil, now, time.Hour))
		settle(0)
		res := h.wantRefused("c2", "quota", "user "+u.ID, "would use 5 of 4 CRU on this node")
		if strings.Contains(res.Message, "workloads") {
			t.Errorf("CRU refusal also names the workload count: %q", res.Message)
		}

		h.deliver(u.Volume("v1", testNode, 1, now, time.Hour))
		h.deliver(u.Volume("v2", testNode, 1, now, time.Hour))
		settle(0)
		h.wantState("v1", provision.Deployed)
		h.wantState("v2", provision.Deployed)
		h.deliver(u.Volume("v3", testNode, 1, now, time.Hour))
		settle(0)
		h.wantRefused("v3", "user "+u.ID, "would run 4 of 3 workloads on this node")

		// Another user's quota is its own.
		h.deliver(other.Container("o1", testNode, 4, 256, "", nil, now, time.Hour))
		settle(0)
		h.wantState("o1", provision.Deployed)
		want := map[string]provision.Usage{
			u.ID:     {Units: provision.Units{CRU: 3, MRU: 0.25, SRU: 2}, Workloads: 3},
			other.ID: {Units: provision.Units{CRU: 4, MRU: 0.25}, Workloads: 1},
		}
		if got := h.eng.Usage(); !maps.Equal(got, want) {
			t.Fatalf("usage %v, want %v", got, want)
		}
		h.checkUsage()

		// A delete frees its units and its place.
		h.deliver(u.Delete(c1))
		settle(0)
		h.wantState("c1", provision.Deleted)
		h.deliver(u.Container("c3", testNode, 4, 256, "", nil, now, time.Hour))
		settle(0)
		h.wantState("c3", provision.Deployed)
		h.checkUsage()

		// A restarted Engine derives the usage from the store.
		h.restart()
		settle(0)
		if got := h.eng.Usage(); got[u.ID] != (provision.Usage{Units: provision.Units{CRU: 4, MRU: 0.25, SRU: 2}, Workloads: 3}) {
			t.Fatalf("usage after a restart %v", got)
		}
		h.checkUsage()
		h.deliver(u.Container("c4", testNode, 1, 256, "", nil, now, time.Hour))
		settle(0)
		h.wantRefused("c4", "would run 4 of 3 workloads and use 5 of 4 CRU on this node")
		h.checkStats(h.store)
	})
}

// A per-user override replaces the default for that user alone.
func TestEngineQuotaOverride(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		big := provisiontest.NewUser(2)
		h := newHarness(t, func(o *engine.Options) {
			o.Quotas = provision.Quotas{
				Default: provision.Quota{Workloads: 1},
				Users:   map[string]provision.Quota{big.ID: {Workloads: 2}},
			}
		})
		h.start(nil)
		now := time.Now()
		for _, id := range []string{"b1", "b2", "b3"} {
			h.deliver(big.Volume(id, testNode, 1, now, time.Hour))
		}
		h.deliver(h.user.Volume("s1", testNode, 1, now, time.Hour))
		h.deliver(h.user.Volume("s2", testNode, 1, now, time.Hour))
		settle(0)
		h.wantState("b1", provision.Deployed)
		h.wantState("b2", provision.Deployed)
		h.wantRefused("b3", "would run 3 of 2 workloads")
		h.wantState("s1", provision.Deployed)
		h.wantRefused("s2", "would run 2 of 1 workloads")
	})
}

// SetQuotas applies to the next admission: a lowered quota keeps what
// runs but refuses more, a raised one admits again, and Quotas shows the
// quotas in force.
func TestEngineSetQuotas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *engine.Options) {
			o.Quotas = provision.Quotas{Default: provision.Quota{Workloads: 2}}
		})
		h.start(nil)
		now := time.Now()
		h.deliver(h.user.Volume("v1", testNode, 1, now, time.Hour))
		h.deliver(h.user.Volume("v2", testNode, 1, now, time.Hour))
		settle(0)
		h.wantState("v1", provision.Deployed)
		h.wantState("v2", provision.Deployed)

		lowered := provision.Quotas{Default: provision.Quota{Workloads: 1}}
		h.eng.SetQuotas(lowered)
		if got := h.eng.Quotas(); got.Default != lowered.Default {
			t.Fatalf("Quotas after SetQuotas: %+v", got)
		}
		h.deliver(h.user.Volume("v3", testNode, 1, now, time.Hour))
		settle(0)
		h.wantRefused("v3", "would run 3 of 1 workloads")
		h.wantState("v1", provision.Deployed) // what runs stays
		h.wantState("v2", provision.Deployed)

		h.eng.SetQuotas(provision.Quotas{
			Default: provision.Quota{Workloads: 1},
			Users:   map[string]provision.Quota{h.user.ID: {Workloads: 3}},
		})
		h.deliver(h.user.Volume("v4", testNode, 1, now, time.Hour))
		settle(0)
		h.wantState("v4", provision.Deployed)
		h.checkUsage()
	})
}

// An update past the quota (its new units against the user's usage
// without the running version's) is refused and the running version
// stays; one within it is applied; the count does not change.
func TestEngineQuotaUpdate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *engine.Options) {
			o.Quotas = provision.Quotas{Default: provision.Quota{Units: provision.Units{SRU: 10}, Workloads: 2}}
		})
		h.start(nil)
		now := time.Now()
		a1 := h.user.Volume("a", testNode, 4, now, time.Hour)
		h.deliver(a1)
		h.deliver(h.user.Volume("b", testNode, 5, now, time.Hour))
		settle(0)
		h.wantVersion("a", a1)

		a2 := h.user.Update(a1, provision.Volume{Size: 6, Type: provision.SSD})
		h.deliver(a2)
		settle(0)
		rec := h.wantRunning("a", a1)
		if rec.Units.SRU != 4 || h.prims.Provisions("a") != 1 {
			t.Fatalf("the refused update touched the record or the workload: %+v", rec)
		}
		last := h.lastResult("a")
		if last.State != provision.StateError || last.Digest != a2.Digest() || last.Verify(h.nodeKey()) != nil ||
			!strings.Contains(last.Message, "would use 11 of 10 GiB SRU on this node") ||
			!strings.Contains(last.Message, "version 1 (deployed) keeps running") {
			t.Fatalf("refusal of the update: %s %q", last.State, last.Message)
		}
		h.checkUsage()

		a3 := h.user.Update(a2, provision.Volume{Size: 5, Type: provision.SSD})
		h.deliver(a3)
		settle(0)
		h.wantVersion("a", a3)
		if got := h.eng.Usage()[h.user.ID]; got != (provision.Usage{Units: provision.Units{SRU: 10}, Workloads: 2}) {
			t.Fatalf("usage after the update %+v, want 10 GiB SRU in 2 workloads", got)
		}
		h.checkUsage()
		h.checkStats(h.store)
	})
}

// Many reservations of one user ingested at once, on every shard, never
// take more than the quota: exactly the quota's count is admitted, the
// rest refused, and the usage is what the store holds.
func TestEngineQuotaConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, limit = 64, 5
		h := newHarness(t, func(o *engine.Options) {
			o.Quotas = provision.Quotas{Default: provision.Quota{Units: provision.Units{CRU: 2 * limit}, Workloads: limit + 3}}
		})
		h.start(nil)
		now := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			r := h.user.Container(fmt.Sprintf("c%02d", i), testNode, 2, 64, "", nil, now, time.Hour)
			wg.Go(func() {
				if err := h.src.Deliver(h.ctx, r); err != nil {
					errs <- fmt.Errorf("delivering %s: %w", r.ID, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		settle(0)
		var deployed, refused int
		for i := range n {
			rec := h.record(fmt.Sprintf("c%02d", i))
			switch {
			case rec.State == provision.Deployed:
				deployed++
			case rec.State == provision.Failed && strings.Contains(rec.Result.Message, "would use 12 of 10 CRU"):
				refused++
			default:
				t.Errorf("%s: %s %q", rec.ID(), rec.State, rec.History[len(rec.History)-1].Message)
			}
		}
		if deployed != limit || refused != n-limit {
			t.Fatalf("%d deployed and %d refused, want %d and %d", deployed, refused, limit, n-limit)
		}
		if got := h.eng.Usage()[h.user.ID]; got.Units.CRU != 2*limit || got.Workloads != limit {
			t.Fatalf("usage %+v", got)
		}
		h.checkUsage()
		h.checkStats(h.store)
	})
}

// A quota refusal is permanent and wraps provision.ErrQuota.
func TestQuotaCheck(t *testing.T) {
	q := provision.Quota{Units: provision.Units{CRU: 4, MRU: 8}, Workloads: 2}
	used := provision.Usage{Units: provision.Units{CRU: 3, MRU: 7.5}, Workloads: 1}
	if err := q.Check("u", used, provision.Units{CRU: 1, MRU: 0.5}, 1, "on this node"); err != nil {
		t.Errorf("exactly at the quota: %v", err)
	}
	err := q.Check("u", used, provision.Units{CRU: 2, MRU: 0.75}, 1, "on this node")
	if !errors.Is(err, provision.ErrQuota) || provision.IsTemporary(err) {
		t.Fatalf("over the quota: %v (temporary %v)", err, provision.IsTemporary(err))
	}
	if want := "provision: quota: user u would use 5 of 4 CRU and use 8.25 of 8 GiB MRU on this node"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if err := (provision.Quota{}).Check("u", provision.Usage{Units: provision.Units{CRU: 1 << 40}, Workloads: 1 << 40}, provision.Units{CRU: 1}, 1, ""); err != nil {
		t.Errorf("the zero quota refused: %v", err)
	}
}
