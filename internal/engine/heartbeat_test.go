package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// heartbeatFeedbacker is a Feedbacker that also takes heartbeats: the
// first fail ones fail (temporary), and refuse makes them final.
type heartbeatFeedbacker struct {
	*provisiontest.Feedbacker
	mu     sync.Mutex
	got    []*provision.Heartbeat
	fail   int
	refuse bool
}

func (f *heartbeatFeedbacker) Heartbeat(_ context.Context, _ string, hb *provision.Heartbeat) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse {
		return provision.Permanent(&provision.Refusal{Reason: "malformed", Err: errors.New("no")})
	}
	if f.fail > 0 {
		f.fail--
		return provision.Temporary(errors.New("explorer away"))
	}
	f.got = append(f.got, hb)
	return nil
}

func (f *heartbeatFeedbacker) heartbeats() []*provision.Heartbeat {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*provision.Heartbeat(nil), f.got...)
}

func signedHeartbeat(t testing.TB, s provision.Signer, at time.Time) *provision.Heartbeat {
	t.Helper()
	hb := &provision.Heartbeat{NodeID: testNode, BootID: "0f2c-boot", Booted: at.Add(-time.Hour), Created: at, Interval: time.Minute}
	if err := hb.Sign(s); err != nil {
		t.Fatal(err)
	}
	return hb
}

// TestHeartbeatThroughOutbox: heartbeats wait in the outbox while the
// explorer fails and are delivered in order once it answers; a heartbeat
// the explorer refuses for good is dropped without holding back what
// follows; a Feedbacker that cannot send heartbeats drops them likewise.
func TestHeartbeatThroughOutbox(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		hf := &heartbeatFeedbacker{Feedbacker: h.fb, fail: 3}
		h.opts.Feedbacker = hf
		h.start(nil)
		t0 := time.Now()
		for i := range 3 {
			if ok, err := h.eng.EnqueueHeartbeat(signedHeartbeat(t, h.signer, t0.Add(time.Duration(i)*time.Minute))); err != nil || !ok {
				t.Fatalf("enqueue: %v %v", ok, err)
			}
		}
		settle(time.Minute)
		got := hf.heartbeats()
		if len(got) != 3 {
			t.Fatalf("%d heartbeats delivered, want 3", len(got))
		}
		for i, hb := range got {
			if !hb.Created.Equal(t0.Add(time.Duration(i) * time.Minute)) {
				t.Fatalf("heartbeat %d made at %s: out of order", i, hb.Created)
			}
		}
		if d, _ := h.store.Depth(); d != 0 {
			t.Fatalf("outbox depth %d after delivery", d)
		}
		hf.mu.Lock()
		hf.refuse = true
		hf.mu.Unlock()
		if _, err := h.eng.EnqueueHeartbeat(signedHeartbeat(t, h.signer, t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		settle(time.Minute)
		if d, _ := h.store.Depth(); d != 0 {
			t.Fatalf("a refused heartbeat stays in the outbox (depth %d)", d)
		}
		if _, err := h.eng.EnqueueHeartbeat(&provision.Heartbeat{NodeID: testNode}); err == nil {
			t.Fatal("an unsigned heartbeat was enqueued")
		}
	})
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil) // its Feedbacker sends no heartbeats
		h.start(nil)
		if _, err := h.eng.EnqueueHeartbeat(signedHeartbeat(t, h.signer, time.Now())); err != nil {
			t.Fatal(err)
		}
		settle(time.Minute)
		if d, _ := h.store.Depth(); d != 0 {
			t.Fatalf("an undeliverable heartbeat stays in the outbox (depth %d)", d)
		}
	})
}
