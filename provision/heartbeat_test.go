package provision_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
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

func TestHeartbeatSignature(t *testing.T) {
	signer, pub := provisiontest.NewNodeSigner(7)
	now := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	good := func() *provision.Heartbeat {
		return &provision.Heartbeat{NodeID: "n", BootID: "b", Booted: now.Add(-time.Hour), Created: now, Interval: time.Minute}
	}
	hb := good()
	if err := hb.Sign(signer); err != nil {
		t.Fatal(err)
	}
	if err := hb.Verify(pub); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(hb)
	var back provision.Heartbeat
	if err := json.Unmarshal(raw, &back); err != nil || back.Verify(pub) != nil {
		t.Fatalf("a JSON round trip breaks the signature: %v", err)
	}
	tests := []struct {
		name string
		mut  func(*provision.Heartbeat)
	}{
		{"boot-id", func(h *provision.Heartbeat) { h.BootID = "c" }},
		{"created", func(h *provision.Heartbeat) { h.Created = h.Created.Add(time.Nanosecond) }},
		{"booted", func(h *provision.Heartbeat) { h.Booted = h.Booted.Add(time.Second) }},
		{"interval", func(h *provision.Heartbeat) { h.Interval *= 2 }},
		{"node", func(h *provision.Heartbeat) { h.NodeID = "m" }},
		{"signature", func(h *provision.Heartbeat) { h.Signature = strings.Repeat("0", 128) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *hb
			tt.mut(&c)
			if err := c.Verify(pub); !errors.Is(err, provision.ErrBadHeartbeat) {
				t.Fatalf("a changed %s verifies: %v", tt.name, err)
			}
		})
	}
	bad := []struct {
		name string
		mut  func(*provision.Heartbeat)
	}{
		{"no-boot-id", func(h *provision.Heartbeat) { h.BootID = "" }},
		{"boot-id-control", func(h *provision.Heartbeat) { h.BootID = "a\nb" }},
		{"boot-id-long", func(h *provision.Heartbeat) { h.BootID = strings.Repeat("a", 65) }},
		{"interval-short", func(h *provision.Heartbeat) { h.Interval = time.Millisecond }},
		{"interval-long", func(h *provision.Heartbeat) { h.Interval = 2 * time.Hour }},
		{"booted-after-created", func(h *provision.Heartbeat) { h.Booted = h.Created.Add(time.Second) }},
		{"no-created", func(h *provision.Heartbeat) { h.Created = time.Time{} }},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := good()
			tt.mut(c)
			if err := c.Sign(signer); !errors.Is(err, provision.ErrBadHeartbeat) {
				t.Fatalf("Sign of a heartbeat with %s: %v", tt.name, err)
			}
		})
	}
}

// FuzzHeartbeat decodes arbitrary heartbeat JSON and verifies it: never a
// panic, and one that verifies still verifies after a JSON round trip.
func FuzzHeartbeat(f *testing.F) {
	signer, pub := provisiontest.NewNodeSigner(7)
	hb := &provision.Heartbeat{NodeID: "n", BootID: "b", Booted: time.Unix(1, 0), Created: time.Unix(100, 5), Interval: time.Minute}
	if err := hb.Sign(signer); err != nil {
		f.Fatal(err)
	}
	raw, _ := json.Marshal(hb)
	f.Add(raw)
	f.Add([]byte(`{"node_id":"n","boot_id":"\u0000","interval":-1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var h provision.Heartbeat
		if provision.DecodeData(data, &h) != nil {
			return
		}
		if h.Verify(pub) != nil {
			return
		}
		again, err := json.Marshal(&h)
		if err != nil {
			t.Fatal(err)
		}
		var back provision.Heartbeat
		if err := provision.DecodeData(again, &back); err != nil || back.Verify(pub) != nil {
			t.Fatalf("a verified heartbeat no longer verifies after a round trip: %s → %s: %v", data, again, err)
		}
	})
}
