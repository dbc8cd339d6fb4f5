package cache

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// TestHeartbeatEntries stores heartbeat entries in the outbox next to
// stats: each is kept (unlike stats, no heartbeat replaces another), comes
// back whole and still verifies, in order, across a reopen; Check passes.
func TestHeartbeatEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "provisiond.db")
	s := openStore(t, path, Options{})
	signer, pub := provisiontest.NewNodeSigner(9)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for i := range 3 {
		hb := &provision.Heartbeat{NodeID: "n", BootID: "b", Booted: t0.Add(-time.Hour), Created: t0.Add(time.Duration(i) * time.Minute), Interval: time.Minute}
		if err := hb.Sign(signer); err != nil {
			t.Fatal(err)
		}
		if err := s.Enqueue(&provision.OutboxEntry{Kind: provision.OutboxHeartbeat, Heartbeat: hb, Created: hb.Created},
			&provision.OutboxEntry{Kind: provision.OutboxStats, Stats: &provision.Stats{Updated: hb.Created}, Created: hb.Created}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path, Options{})
	entries, err := s.Pending(10)
	if err != nil {
		t.Fatal(err)
	}
	var beats []*provision.Heartbeat
	stats := 0
	for _, e := range entries {
		switch e.Kind {
		case provision.OutboxHeartbeat:
			beats = append(beats, e.Heartbeat)
		case provision.OutboxStats:
			stats++
		}
	}
	if len(beats) != 3 || stats != 1 {
		t.Fatalf("%d heartbeats and %d stats pending, want 3 and the latest stats", len(beats), stats)
	}
	for i, hb := range beats {
		if err := hb.Verify(pub); err != nil || !hb.Created.Equal(t0.Add(time.Duration(i)*time.Minute)) {
			t.Fatalf("heartbeat %d: %+v, %v", i, hb, err)
		}
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}
