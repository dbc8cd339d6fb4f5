package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// TestEventPagesStayWithinLimit fills a node's stream with large events
// and one beyond MaxEventSize: every page is at most MaxPageSize bytes,
// every event arrives once and in order, and the oversized one arrives as
// a stub with its id.
func TestEventPagesStayWithinLimit(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	nodeID := explorertest.NodeID(node)
	srv := xs.Explorer()
	const n = 30
	pad := strings.Repeat("p", 400<<10)
	for i := range n {
		body := fmt.Sprintf(`{"id":"e%d","pad":%q}`, i, pad)
		switch {
		case i == 10:
			body = fmt.Sprintf(`{"id":"big","pad":%q}`, strings.Repeat("b", 2*explorer.MaxEventSize))
		case i >= 20 && i < 23: // stored unescaped: 6 times larger once encoding/json escapes it
			body = fmt.Sprintf(`{"id":"e%d","pad":"%s"}`, i, strings.Repeat("<", 400<<10))
		}
		if _, err := srv.InjectEvent(nodeID, json.RawMessage(body)); err != nil {
			t.Fatal(err)
		}
	}
	var from uint64
	var seen []uint64
	pages := 0
	for from < n {
		req := raw{method: "GET", path: fmt.Sprintf("/api/v1/nodes/%s/events?from=%d", nodeID, from), key: node}
		got := do(t, req.build(t, xs.URL()))
		if got.status != http.StatusOK {
			t.Fatalf("poll from %d: %d %s", from, got.status, got.msg)
		}
		if len(got.body) > explorer.MaxPageSize {
			t.Fatalf("page from %d: %d bytes, more than %d", from, len(got.body), explorer.MaxPageSize)
		}
		var page explorer.EventsReply
		if err := json.Unmarshal(got.body, &page); err != nil || len(page.Events) == 0 {
			t.Fatalf("page from %d: %d events, %v", from, len(page.Events), err)
		}
		for _, ev := range page.Events {
			seen = append(seen, ev.Seq)
			if ev.Seq == 11 && (string(ev.Reservation) != `{"id":"big"}` || ev.Oversized <= explorer.MaxEventSize) {
				t.Fatalf("the oversized event came as %.80s, oversized %d", ev.Reservation, ev.Oversized)
			}
		}
		if page.Next != page.Events[len(page.Events)-1].Seq {
			t.Fatalf("next %d after the last event %d", page.Next, page.Events[len(page.Events)-1].Seq)
		}
		from = page.Next
		pages++
	}
	for i, seq := range seen {
		if seq != uint64(i+1) {
			t.Fatalf("events %v: not each once in order", seen)
		}
	}
	// 26 events of 400 KiB and 3 of 2.4 MiB once escaped: 6 pages at most.
	if pages > 6 {
		t.Fatalf("%d pages: pages are shorter than they need to be", pages)
	}
}

// TestReservationLargerThanAnEvent refuses a reservation a node could not
// read in one event.
func TestReservationLargerThanAnEvent(t *testing.T) {
	xs := explorertest.New(t)
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	r := explorertest.Volume(explorertest.NodeID(node), 1)
	r.Type = provision.ReservationType(strings.Repeat("<", 100<<10)) // 6 bytes each once escaped
	r.Sign(user)
	req := raw{method: "POST", path: "/api/v1/reservations", body: testutil.MustJSON(t, r), key: user, keyID: explorertest.UserID(user)}
	got := do(t, req.build(t, xs.URL()))
	if got.status != http.StatusRequestEntityTooLarge || !strings.Contains(got.msg, "as JSON") {
		t.Fatalf("got %d %q, want 413", got.status, got.msg)
	}
}

// TestNotRegisteredCode answers a node endpoint of an unknown node with
// the code a node acts on.
func TestNotRegisteredCode(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	req := raw{method: "PUT", path: "/api/v1/nodes/" + explorertest.NodeID(node) + "/stats", body: []byte(`{}`), key: node, at: time.Now()}
	got := do(t, req.build(t, xs.URL()))
	var er explorer.ErrorReply
	if err := json.Unmarshal(got.body, &er); err != nil || got.status != http.StatusForbidden || er.Code != explorer.CodeNotRegistered {
		t.Fatalf("got %d %s, want 403 with code %q", got.status, got.body, explorer.CodeNotRegistered)
	}
	xs.RegisterNode(t, node)
	req.at = time.Now()
	if got = do(t, req.build(t, xs.URL())); got.status == http.StatusForbidden {
		t.Fatalf("a registered node: %d %s", got.status, got.body)
	}
}
