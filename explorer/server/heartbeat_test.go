package server_test

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// TestHeartbeats sends a node's signed heartbeats through the API on a
// moving clock: GET /api/v1/nodes and the pages show the availability,
// a new boot id as a reboot, and the node down once it missed three
// intervals although its last request is recent; forged heartbeats are
// refused for good (400).
func TestHeartbeats(t *testing.T) {
	ctx := t.Context()
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	xs := explorertest.NewWithConfig(t, server.Config{NoSync: true, Now: clk.now})
	opts := explorertest.ClientOptions()
	opts.Now = clk.now
	key := explorertest.NewKey(t)
	nc := explorer.NewClient(xs.URL(), key, opts)
	if err := nc.Register(ctx); err != nil {
		t.Fatal(err)
	}
	node := explorertest.NodeID(key)
	if err := nc.ReportCapacity(ctx, provision.Capacity{Total: provision.Units{CRU: 2, MRU: 4}}, "v1"); err != nil {
		t.Fatal(err)
	}
	uc := explorer.NewUserClient(xs.URL(), explorertest.NewKey(t), opts)
	summary := func() explorer.NodeSummary {
		t.Helper()
		reply, err := uc.ListNodes(ctx, explorer.NodeFilter{})
		if err != nil || len(reply.Nodes) != 1 {
			t.Fatalf("nodes: %+v, %v", reply, err)
		}
		return reply.Nodes[0]
	}
	if a := summary().Availability; a != nil {
		t.Fatalf("availability before any heartbeat: %+v", a)
	}
	const every = 10 * time.Second
	beat := func(boot string, booted time.Time) {
		t.Helper()
		sendHeartbeat(t, nc, key, &provision.Heartbeat{NodeID: node, BootID: boot, Booted: booted, Created: clk.now(), Interval: every})
	}
	bootA := clk.now().Add(-time.Hour)
	for range 30 {
		beat("boot-a", bootA)
		clk.add(every)
	}
	s := summary()
	if s.Status != explorer.NodeUp || s.Availability == nil || s.Availability.Percent30d != 100 || s.Availability.BootID != "boot-a" ||
		s.Availability.Reboots30d != 0 || s.Availability.IntervalSeconds != 10 {
		t.Fatalf("after 30 heartbeats: %s %+v", s.Status, s.Availability)
	}
	// 50 s without heartbeats (the node still polls: its last request is
	// recent), then a new boot.
	clk.add(40 * time.Second)
	if err := nc.ReportCapacity(ctx, provision.Capacity{Total: provision.Units{CRU: 2, MRU: 4}}, "v1"); err != nil {
		t.Fatal(err)
	}
	if s := summary(); s.Status != explorer.NodeDown || s.Availability.DownSince == nil {
		t.Fatalf("after three missed intervals: %s %+v", s.Status, s.Availability)
	}
	bootB := clk.now().Add(-5 * time.Second)
	beat("boot-b", bootB)
	s = summary()
	a := s.Availability
	if s.Status != explorer.NodeUp || a.BootID != "boot-b" || a.Reboots30d != 1 || a.LastReboot == nil || !a.LastReboot.Equal(bootB) || a.DownSince != nil {
		t.Fatalf("after the reboot: %s %+v", s.Status, a)
	}
	// Covered: 300 s of boot A (its first heartbeat covers the interval
	// before it) and 5 s of boot B, over the 310 s + 40 s since the first cover.
	if want := 100 * 305.0 / 350.0; a.Percent30d < want-0.01 || a.Percent30d > want+0.01 {
		t.Fatalf("availability %.2f %%, want %.2f", a.Percent30d, want)
	}

	// Forged, foreign and old heartbeats.
	other := explorertest.NewKey(t)
	forged := &provision.Heartbeat{NodeID: node, BootID: "x", Booted: bootB, Created: clk.now(), Interval: every}
	if err := forged.Sign(provision.KeySigner(other)); err != nil {
		t.Fatal(err)
	}
	var ref *provision.Refusal
	if err := nc.Heartbeat(ctx, node, forged); !errors.As(err, &ref) || provision.IsTemporary(err) || ref.Reason != "malformed" {
		t.Fatalf("a forged heartbeat: %v, want a permanent refusal", err)
	}
	foreign := &provision.Heartbeat{NodeID: explorertest.NodeID(other), BootID: "x", Booted: bootB, Created: clk.now(), Interval: every}
	if err := foreign.Sign(provision.KeySigner(other)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Heartbeat(ctx, node, foreign); !errors.As(err, &ref) {
		t.Fatalf("another node's heartbeat: %v, want a permanent refusal", err)
	}
	old := &provision.Heartbeat{NodeID: node, BootID: "boot-old", Booted: clk.now().Add(-40 * 24 * time.Hour), Created: clk.now().Add(-31 * 24 * time.Hour), Interval: every}
	if err := old.Sign(provision.KeySigner(key)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Heartbeat(ctx, node, old); err != nil {
		t.Fatalf("a heartbeat older than the window: %v, want it acknowledged", err)
	}
	if a := summary().Availability; a.BootID != "boot-b" || a.Reboots30d != 1 {
		t.Fatalf("an old heartbeat changed the record: %+v", a)
	}

	// The pages and their JSON twins show the same.
	for _, path := range []string{"/ui/?format=json", "/ui/nodes/" + node + "?format=json", "/ui/", "/ui/nodes/" + node} {
		resp, err := http.Get(xs.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		want := `"reboots_30d": 1`
		if !strings.Contains(path, "json") {
			want = "1 reboot"
		}
		if !strings.Contains(string(body), want) || !strings.Contains(string(body), "87.14") {
			t.Fatalf("%s lacks the availability (%s, 87.14):\n%s", path, want, body)
		}
		if strings.HasSuffix(path, "json") {
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
	}
}

// sendHeartbeat signs hb with the node's key and sends it through nc,
// the node's client; any error fails the test.
func sendHeartbeat(t *testing.T, nc *explorer.Client, key ed25519.PrivateKey, hb *provision.Heartbeat) {
	t.Helper()
	if err := hb.Sign(provision.KeySigner(key)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Heartbeat(t.Context(), hb.NodeID, hb); err != nil {
		t.Fatal(err)
	}
}
