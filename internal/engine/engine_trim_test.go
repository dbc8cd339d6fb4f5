package engine_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
)

// trimCounter is a store that counts its Trim calls.
type trimCounter struct {
	provision.Store
	trims atomic.Int64
}

func (s *trimCounter) Trim() { s.trims.Add(1) }

// The Engine tells a Trimmer store when it has nothing left to run, and
// not while an operation runs.
func TestEngineTrimsWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *engine.Options) { o.OpTimeout = time.Hour })
		store := &trimCounter{Store: h.store}
		h.prims.HangProvision("stuck", 1)
		h.start(store)
		h.deliver(h.user.Volume("stuck", testNode, 1, time.Now(), 24*time.Hour))
		for i := range 3 {
			h.deliver(h.user.Volume(fmt.Sprint("v", i), testNode, 1, time.Now(), 24*time.Hour))
		}
		settle(0)
		h.wantState("v2", provision.Deployed)
		if n := store.trims.Load(); n != 0 {
			t.Fatalf("trimmed %d times while an operation ran", n)
		}
		settle(time.Hour + engine.DefaultBackoffMax) // the stuck one times out, is retried and deploys
		h.wantState("stuck", provision.Deployed)
		if n := store.trims.Load(); n == 0 {
			t.Fatal("not trimmed once idle")
		}
	})
}
