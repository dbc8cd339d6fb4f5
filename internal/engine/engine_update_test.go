package engine_test

import (
	"context"
	"crypto/ed25519"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

func (h *harness) nodeKey() ed25519.PublicKey {
	return ed25519.PrivateKey(h.signer).Public().(ed25519.PublicKey)
}

// wantVersion fails unless id is deployed at r (its digest and version),
// with no update pending, its primitive last applied r's version and its
// last delivered result is a verified ok for r.
func (h *harness) wantVersion(id string, r *provision.Reservation) *provision.Record {
	h.t.Helper()
	rec := h.wantRunning(id, r)
	last := h.lastResult(id)
	if last.State != provision.StateOk || last.Digest != r.Digest() || last.Version != r.Version || last.Verify(h.nodeKey()) != nil {
		h.t.Fatalf("last result of %s: %s v%d %s %q, want ok for v%d", id, last.State, last.Version, last.Digest, last.Message, r.Version)
	}
	return rec
}

// wantRunning is wantVersion without the check of the last result.
func (h *harness) wantRunning(id string, r *provision.Reservation) *provision.Record {
	h.t.Helper()
	rec := h.wantState(id, provision.Deployed)
	if rec.Digest != r.Digest() || rec.Reservation.Version != r.Version || rec.Prior != nil {
		h.t.Fatalf("%s holds version %d (%s, prior %v), want %d (%s)", id, rec.Reservation.Version, rec.Digest, rec.Prior != nil, r.Version, r.Digest())
	}
	if v := h.prims.Version(id); v != r.Version {
		h.t.Fatalf("the primitive last applied version %d of %s, want %d", v, id, r.Version)
	}
	return rec
}

// An owner-signed next version is applied: the record holds it, the
// primitive converged to it, an ok result for it is delivered and the
// stats count its units in place of the old ones.
func TestEngineUpdateApplied(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		v1 := h.user.Volume("v", testNode, 2, time.Now(), time.Hour)
		h.deliver(v1)
		settle(0)
		h.wantVersion("v", v1)
		v2 := h.user.Update(v1, provision.Volume{Size: 5, Type: provision.SSD})
		h.deliver(v2)
		settle(0)
		rec := h.wantVersion("v", v2)
		if rec.Units.SRU != 5 {
			t.Errorf("units after the update %+v, want 5 GiB SSD", rec.Units)
		}
		h.checkStats(h.store)
		if st := h.eng.Status().Stats; st.Used.SRU != 5 {
			t.Errorf("stats count %v GiB SSD, want 5", st.Used.SRU)
		}
		// A repeat of the applied version changes nothing.
		n := h.prims.Provisions("v")
		h.deliver(v2)
		settle(0)
		h.wantVersion("v", v2)
		if m := h.prims.Provisions("v"); m != n {
			t.Errorf("a repeated update provisioned again (%d → %d)", n, m)
		}
	})
}

// A refused update leaves the running version alone and answers with a
// signed error result for the refused digest that names the version that
// keeps running.
func TestEngineUpdateRefused(t *testing.T) {
	other := provisiontest.NewUser(2)
	cases := map[string]func(u *provisiontest.User, v1 *provision.Reservation) *provision.Reservation{
		"shrinks": func(u *provisiontest.User, v1 *provision.Reservation) *provision.Reservation {
			return u.Update(v1, provision.Volume{Size: 1, Type: provision.SSD})
		},
		"changes the disk type": func(u *provisiontest.User, v1 *provision.Reservation) *provision.Reservation {
			return u.Update(v1, provision.Volume{Size: 2, Type: provision.HDD})
		},
		"does not fit": func(u *provisiontest.User, v1 *provision.Reservation) *provision.Reservation {
			return u.Update(v1, provision.Volume{Size: 5000, Type: provision.SSD})
		},
		"changes the type": func(u *provisiontest.User, v1 *provision.Reservation) *provision.Reservation {
			r := u.Network(v1.ID, testNode, "net", v1.Created, v1.Duration)
			r.Version, r.Previous = v1.Version+1, v1.Digest()
			r.Sign(u.Key)
			return r
		},
		"skips a version": func(u *provisiontest.User, v1 *provision.Reservation) *provision.Reservation {
			r := u.Update(v1, provision.Volume{Size: 3, Type: provision.SSD})
			r.Version++
			r.Sign(u.Key)
			return r
		},
		"names the wrong previous digest": func(u *provisiontest.User, v1 *provision.Reservation) *provision.Reservation {
			r := u.Update(v1, provision.Volume{Size: 3, Type: provision.SSD})
			r.Previous = strings.Repeat("0", 64)
			r.Sign(u.Key)
			return r
		},
		"is signed by another user": func(_ *provisiontest.User, v1 *provision.Reservation) *provision.Reservation {
			return other.Update(v1, provision.Volume{Size: 3, Type: provision.SSD})
		},
		"has a bad signature": func(u *provisiontest.User, v1 *provision.Reservation) *provision.Reservation {
			r := u.Update(v1, provision.Volume{Size: 3, Type: provision.SSD})
			r.Data = []byte(`{"size":4,"type":"ssd"}`)
			return r
		},
		"is an older version": func(u *provisiontest.User, v1 *provision.Reservation) *provision.Reservation {
			r := u.Volume(v1.ID, testNode, 3, v1.Created, v1.Duration)
			r.Version = 0
			r.Sign(u.Key)
			return r
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, nil)
				h.start(nil)
				v1 := h.user.Volume("v", testNode, 2, time.Now(), time.Hour)
				h.deliver(v1)
				settle(0)
				h.wantVersion("v", v1)
				bad := mk(h.user, v1)
				h.deliver(bad)
				settle(0)
				rec := h.wantState("v", provision.Deployed)
				if rec.Digest != v1.Digest() || rec.Prior != nil || rec.Units.SRU != 2 || h.prims.Version("v") != v1.Version || h.prims.Provisions("v") != 1 {
					t.Fatalf("the refused update touched the record or the workload: %+v", rec)
				}
				last := h.lastResult("v")
				if last.State != provision.StateError || last.Digest != bad.Digest() || last.Version != bad.Version ||
					!strings.Contains(last.Message, "version 1 (deployed) keeps running") || last.Verify(h.nodeKey()) != nil {
					t.Fatalf("refusal result: %s v%d %s %q", last.State, last.Version, last.Digest, last.Message)
				}
				t.Logf("%s", last.Message)
				h.checkStats(h.store)
				// The running version's result stays what the node has.
				if rec.Result == nil || rec.Result.State != provision.StateOk || rec.Result.Digest != v1.Digest() {
					t.Fatalf("stored result changed: %+v", rec.Result)
				}
			})
		})
	}
}

// After a refused version (the explorer holds it), the owner's next
// version names it as previous and is applied.
func TestEngineUpdateAfterRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		v1 := h.user.Volume("v", testNode, 2, time.Now(), time.Hour)
		h.deliver(v1)
		settle(0)
		v2 := h.user.Update(v1, provision.Volume{Size: 1, Type: provision.SSD}) // shrinks
		h.deliver(v2)
		settle(0)
		rec := h.wantRunning("v", v1)
		if rec.FailedUpdate == nil || rec.FailedUpdate.Digest != v2.Digest() || rec.FailedUpdate.Signature != h.lastResult("v").Signature {
			t.Fatalf("the refusal is not recorded: %+v", rec.FailedUpdate)
		}
		n := len(h.fb.ResultsFor("v"))
		h.deliver(v2) // a repeat: the same answer
		settle(0)
		if rs := h.fb.ResultsFor("v"); len(rs) != n+1 || rs[n].Signature != rec.FailedUpdate.Signature {
			t.Fatalf("a repeated refused version: %d new results", len(rs)-n)
		}
		v3 := h.user.Update(v2, provision.Volume{Size: 4, Type: provision.SSD})
		h.deliver(v3)
		settle(0)
		if rec := h.wantVersion("v", v3); rec.FailedUpdate != nil || rec.Units.SRU != 4 {
			t.Fatalf("after version 3: failed %+v, units %+v", rec.FailedUpdate, rec.Units)
		}
		// Version 2 again, now stale.
		h.deliver(v2)
		settle(0)
		h.wantRunning("v", v3)
		h.checkStats(h.store)
	})
}

// Versions that arrive out of order: the one that skips is refused, the
// next is applied, and the skipped one, delivered again (as the source's
// repair does), is applied then.
func TestEngineUpdateOutOfOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		v1 := h.user.Volume("v", testNode, 2, time.Now(), time.Hour)
		v2 := h.user.Update(v1, provision.Volume{Size: 3, Type: provision.SSD})
		v3 := h.user.Update(v2, provision.Volume{Size: 4, Type: provision.SSD})
		h.deliver(v1)
		settle(0)
		h.deliver(v3)
		settle(0)
		h.wantRunning("v", v1)
		if last := h.lastResult("v"); last.State != provision.StateError || last.Version != 3 {
			t.Fatalf("v3 before v2: %s v%d %q", last.State, last.Version, last.Message)
		}
		h.deliver(v2)
		settle(0)
		h.wantVersion("v", v2)
		h.deliver(v3)
		settle(0)
		h.wantVersion("v", v3)
		h.deliver(v2) // stale now
		settle(0)
		h.wantState("v", provision.Deployed)
		if last := h.lastResult("v"); last.State != provision.StateError || last.Version != 2 || !strings.Contains(last.Message, "not newer") {
			t.Fatalf("stale v2 after v3: %s v%d %q", last.State, last.Version, last.Message)
		}
		if rec := h.record("v"); rec.Digest != v3.Digest() || rec.Units.SRU != 4 {
			t.Fatalf("stale v2 touched the record: %s %+v", rec.Digest, rec.Units)
		}
		h.checkStats(h.store)
	})
}

// An update that cannot be applied returns the workload to the prior
// version: an error result for the new version, then the prior version
// provisioned again and deployed with its units back in the stats.
func TestEngineUpdateRollback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		v1 := h.user.Volume("v", testNode, 2, time.Now(), time.Hour)
		h.deliver(v1)
		settle(0)
		h.prims.FailProvision("v", 1, false)
		v2 := h.user.Update(v1, provision.Volume{Size: 6, Type: provision.SSD})
		h.deliver(v2)
		settle(engine.DefaultBackoffMax)
		rec := h.wantRunning("v", v1)
		if rec.Units.SRU != 2 || rec.Restoring || rec.Result.State != provision.StateOk || rec.Result.Digest != v1.Digest() {
			t.Errorf("after the rollback: units %+v, restoring %v, result %+v", rec.Units, rec.Restoring, rec.Result)
		}
		last := h.lastResult("v")
		if last.Digest != v2.Digest() || last.State != provision.StateError || !strings.Contains(last.Message, "returning to version 1") ||
			last.Verify(h.nodeKey()) != nil || rec.FailedUpdate == nil || rec.FailedUpdate.Signature != last.Signature {
			t.Fatalf("last result %s v%d %q, want the error of version 2", last.State, last.Version, last.Message)
		}
		if n := h.prims.Provisions("v"); n != 2 {
			t.Errorf("%d provisions, want 2 (version 1, then version 1 again)", n)
		}
		h.checkStats(h.store)
		// The failed version, delivered again, gets the same answer.
		n := len(h.fb.ResultsFor("v"))
		h.deliver(v2)
		settle(0)
		h.wantRunning("v", v1)
		if rs := h.fb.ResultsFor("v"); len(rs) != n+1 || rs[n].Signature != last.Signature {
			t.Fatalf("a repeat of the failed version: %d results, want the same error again", len(rs)-n)
		}
		// The owner's delete of the failed version (the explorer holds it).
		// Another next version is tried.
		v2b := h.user.Update(v1, provision.Volume{Size: 3, Type: provision.SSD})
		h.deliver(v2b)
		settle(0)
		if rec := h.wantVersion("v", v2b); rec.FailedUpdate != nil {
			t.Errorf("the failed update is still remembered after another applied")
		}
	})
}

// The owner's delete of a version the node refused or rolled back (the
// one the explorer holds) deletes the reservation.
func TestEngineDeleteOfRefusedVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.start(nil)
		v1 := h.user.Volume("v", testNode, 2, time.Now(), time.Hour)
		h.deliver(v1)
		settle(0)
		v2 := h.user.Update(v1, provision.Volume{Size: 1, Type: provision.SSD}) // shrinks: refused
		h.deliver(v2)
		settle(0)
		h.wantRunning("v", v1)
		forged := provisiontest.NewUser(9).Delete(v2)
		h.deliver(forged)
		settle(0)
		h.wantRunning("v", v1)
		h.deliver(h.user.Delete(v2))
		settle(engine.DefaultBackoffMax)
		h.wantState("v", provision.Deleted)
		if live := h.prims.Live(); len(live) != 0 {
			t.Errorf("live after delete: %v", live)
		}
		// The "deleted" result answers the version the explorer holds.
		if last := h.lastResult("v"); last.State != provision.StateDeleted || last.Digest != v2.Digest() || last.Version != v2.Version || last.Verify(h.nodeKey()) != nil {
			t.Errorf("deleted result %s v%d %s, want version 2's digest", last.State, last.Version, last.Digest)
		}
		h.checkStats(h.store)
	})
}

// A delete during an update removes the workload, whichever version it
// was at; the record ends deleted and nothing stays live.
func TestEngineUpdateThenDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *engine.Options) { o.OpTimeout = time.Minute })
		h.start(nil)
		v1 := h.user.Volume("v", testNode, 2, time.Now(), time.Hour)
		h.deliver(v1)
		settle(0)
		h.prims.HangProvision("v", 1)
		v2 := h.user.Update(v1, provision.Volume{Size: 3, Type: provision.SSD})
		h.deliver(v2)
		synctest.Wait()
		if rec := h.wantState("v", provision.Provisioning); rec.Prior == nil || rec.Prior.Digest != v1.Digest() {
			t.Fatalf("update in progress without its prior version: %+v", rec.Prior)
		}
		h.deliver(h.user.Delete(v2))
		settle(engine.DefaultBackoffMax + time.Minute)
		rec := h.wantState("v", provision.Deleted)
		if rec.Prior != nil {
			t.Errorf("a deleted record keeps a prior version")
		}
		if live := h.prims.Live(); len(live) != 0 {
			t.Errorf("live after delete: %v", live)
		}
		if last := h.lastResult("v"); last.State != provision.StateDeleted {
			t.Errorf("last result %s %q", last.State, last.Message)
		}
		h.checkStats(h.store)
	})
}

// A crash between any two writes of an update (and of its rollback)
// converges after a restart to exactly one version: the new one when it
// can be applied, the prior one when it cannot; never both, never none.
func TestEngineUpdateCrashRecovery(t *testing.T) {
	for _, failing := range []bool{false, true} {
		scenario := func(h *harness) (v1, v2 *provision.Reservation) {
			v1 = h.user.Volume("v", testNode, 2, time.Now(), time.Hour)
			v2 = h.user.Update(v1, provision.Volume{Size: 4, Type: provision.SSD})
			return v1, v2
		}
		run := func(h *harness, rs ...*provision.Reservation) {
			for _, r := range rs {
				if err := h.src.Deliver(h.ctx, r); err != nil {
					return
				}
				settle(engine.DefaultBackoffMax)
			}
		}
		var writes int
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, nil)
			if failing {
				h.opts.Primitives = failVersion{h.prims, 2}
			}
			cs := provisiontest.NewCrashStore(h.store, -1)
			h.start(cs)
			v1, v2 := scenario(h)
			run(h, v1, v2)
			writes = cs.Writes()
		})
		for after := 0; after <= writes; after++ {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, nil)
				if failing {
					h.opts.Primitives = failVersion{h.prims, 2}
				}
				cs := provisiontest.NewCrashStore(h.store, after)
				cs.OnCrash = func() { h.cancel() }
				h.start(cs)
				v1, v2 := scenario(h)
				run(h, v1, v2)
				h.stop()
				h.start(nil)
				run(h, v1, v2) // the source redelivers what was not acknowledged
				settle(engine.DefaultBackoffMax)
				want := v2
				if failing {
					want = v1
				}
				rec := h.wantRunning("v", want)
				if slices.Compare(h.prims.Live(), []string{"v"}) != 0 {
					t.Errorf("crash at write %d: live %v", after, h.prims.Live())
				}
				sent := rec.Result
				if failing {
					sent = rec.FailedUpdate // the explorer holds version 2: its error is the last word
				}
				if sent == nil || sent.Signature != h.lastResult("v").Signature {
					t.Errorf("crash at write %d: the last delivered result is not the stored one", after)
				}
				if d, _ := h.store.Depth(); d != 0 {
					t.Errorf("crash at write %d: %d outbox entries left", after, d)
				}
				h.checkStats(h.store)
			})
		}
		t.Logf("failing update %v: %d crash points converged", failing, writes+1)
	}
}

// failVersion fails every provision of one version permanently.
type failVersion struct {
	*provisiontest.RecordingPrimitives
	version uint32
}

func (f failVersion) Provision(ctx context.Context, r *provision.Reservation) (any, error) {
	if r.Version == f.version {
		return nil, provision.Permanentf("version %d cannot be applied", r.Version)
	}
	return f.RecordingPrimitives.Provision(ctx, r)
}
