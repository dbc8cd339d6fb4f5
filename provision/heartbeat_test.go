package provision_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

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
