package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// holds returns a server config whose OnHold reports held polls on the
// returned channel.
func holds() (server.Config, <-chan string) {
	ch := make(chan string, 16)
	return server.Config{OnHold: func(node string) { ch <- node }}, ch
}

func awaitHold(t testing.TB, ch <-chan string, node string) {
	t.Helper()
	select {
	case n := <-ch:
		if n != node {
			t.Fatalf("poll held for %s, want %s", n, node)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the poll was never held")
	}
}

type pollResult struct {
	events []provision.Event
	next   uint64
	err    error
	at     time.Time
}

func TestLongPollDeliversPublishedEvent(t *testing.T) {
	cfg, held := holds()
	xs := explorertest.NewWithConfig(t, cfg)
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	nc := xs.RegisterNode(t, node)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	done := make(chan pollResult, 1)
	go func() {
		evs, next, err := nc.Poll(ctx, 0)
		done <- pollResult{evs, next, err, time.Now()}
	}()
	awaitHold(t, held, explorertest.NodeID(node))

	published := time.Now()
	id := xs.Reserve(t, user, explorertest.Volume(explorertest.NodeID(node), 1))
	var got pollResult
	select {
	case got = <-done:
	case <-ctx.Done():
		t.Fatal("the held poll never delivered the event")
	}
	if got.err != nil {
		t.Fatal(got.err)
	}
	if len(got.events) != 1 || got.events[0].Reservation.ID != id || got.next != 1 {
		t.Fatalf("got %d events (next %d), want reservation %s at seq 1", len(got.events), got.next, id)
	}
	t.Logf("delivery latency from submission to the waiting node: %s", got.at.Sub(published))
	if n := xs.Explorer().Waiting(); n != 0 {
		t.Fatalf("%d nodes still have waiters after the poll returned", n)
	}
}

func TestLongPollWaitPasses(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	get := raw{method: "GET", path: "/api/v1/nodes/" + explorertest.NodeID(node) + "/events?from=0&wait=10ms", key: node}
	got := do(t, get.build(t, xs.URL()))
	if got.status != http.StatusOK || string(got.body) != "{\"events\":[],\"next\":0}\n" {
		t.Fatalf("got %d %s, want an empty page with next 0", got.status, got.body)
	}
	bad := raw{method: "GET", path: "/api/v1/nodes/" + explorertest.NodeID(node) + "/events?from=x", key: node}
	if got := do(t, bad.build(t, xs.URL())); got.status != http.StatusBadRequest {
		t.Fatalf("from=x: got %d, want 400", got.status)
	}
}

func TestReleaseAnswersHeldPolls(t *testing.T) {
	cfg, held := holds()
	xs := explorertest.NewWithConfig(t, cfg)
	node := explorertest.NewKey(t)
	nc := xs.RegisterNode(t, node)
	done := make(chan pollResult, 1)
	go func() {
		evs, next, err := nc.Poll(t.Context(), 0)
		done <- pollResult{events: evs, next: next, err: err}
	}()
	awaitHold(t, held, explorertest.NodeID(node))
	xs.Explorer().Release()
	select {
	case got := <-done:
		if got.err != nil || len(got.events) != 0 || got.next != 0 {
			t.Fatalf("released poll: %d events, next %d, %v; want an empty page", len(got.events), got.next, got.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Release did not answer the held poll")
	}
}

func TestCursorResume(t *testing.T) {
	xs := explorertest.NewWithConfig(t, server.Config{PageLimit: 3})
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	nc := xs.RegisterNode(t, node)
	var ids []string
	for i := range 5 {
		ids = append(ids, xs.Reserve(t, user, explorertest.Volume(explorertest.NodeID(node), int64(i+1))))
	}
	tests := []struct {
		name string
		from uint64
		want []string
		next uint64
	}{
		{"from-start-first-page", 0, ids[:3], 3},
		{"second-page", 3, ids[3:], 5},
		{"reconnect-mid-stream", 4, ids[4:], 5},
		{"caught-up", 5, nil, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.want == nil {
				// Nothing to return: the server holds the poll; do not wait for it.
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				cancel()
				_, next, err := nc.Poll(ctx, tt.from)
				if err == nil || next != tt.from {
					t.Fatalf("cancelled poll: next %d, %v; want an error and the cursor kept", next, err)
				}
				got := do(t, raw{method: "GET", path: "/api/v1/nodes/" + explorertest.NodeID(node) + "/events?from=5", key: node}.build(t, xs.URL()))
				if string(got.body) != "{\"events\":[],\"next\":5}\n" {
					t.Fatalf("caught up: %s", got.body)
				}
				return
			}
			evs, next, err := nc.Poll(ctx, tt.from)
			if err != nil {
				t.Fatal(err)
			}
			if next != tt.next || len(evs) != len(tt.want) {
				t.Fatalf("got %d events next %d, want %d next %d", len(evs), next, len(tt.want), tt.next)
			}
			for i, ev := range evs {
				if ev.Seq != tt.from+uint64(i)+1 || ev.Reservation.ID != tt.want[i] || ev.Err != nil {
					t.Fatalf("event %d: seq %d id %s err %v; want seq %d id %s", i, ev.Seq, ev.Reservation.ID, ev.Err, tt.from+uint64(i)+1, tt.want[i])
				}
			}
		})
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	xs := explorertest.New(t)
	node, user := explorertest.NewKey(t), explorertest.NewKey(t)
	nodeID := explorertest.NodeID(node)
	nc := xs.RegisterNode(t, node)
	kept := explorertest.Volume(nodeID, 1)
	xs.Reserve(t, user, kept)
	deleted := explorertest.Volume(nodeID, 2)
	xs.Reserve(t, user, deleted)
	res := signedResult(t, kept, nodeID, node, time.Now())
	if err := nc.Feedback(t.Context(), nodeID, res); err != nil {
		t.Fatal(err)
	}
	xs.Delete(t, user, deleted.ID)
	if err := nc.UpdateStats(t.Context(), nodeID, &provision.Stats{Used: provision.Units{SRU: 3}, Updated: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}

	xs.Restart()

	got := xs.Reservation(t, kept.ID)
	if got.Result == nil || got.Result.Signature != res.Signature {
		t.Fatalf("result lost across restart: %+v", got.Result)
	}
	if !xs.Reservation(t, deleted.ID).ToDelete {
		t.Fatal("delete lost across restart")
	}
	evs, next, err := nc.Poll(t.Context(), 0) // the client reconnects by itself
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || next != 3 || evs[0].Reservation.ID != kept.ID || !evs[2].Reservation.ToDelete {
		t.Fatalf("events after restart: %d, next %d", len(evs), next)
	}
	// The sequence continues where it was.
	third := xs.Reserve(t, user, explorertest.Volume(nodeID, 3))
	evs, next, err = nc.Poll(t.Context(), 3)
	if err != nil || len(evs) != 1 || evs[0].Seq != 4 || evs[0].Reservation.ID != third || next != 4 {
		t.Fatalf("new event after restart: %d events, next %d, %v", len(evs), next, err)
	}
	info, err := nc.Node(t.Context(), nodeID)
	if err != nil || info.Stats == nil || info.Stats.Used.SRU != 3 || info.Events != 4 {
		t.Fatalf("node after restart: %+v, %v", info, err)
	}
	list, err := xs.UserClient(user).ListReservations(t.Context(), "")
	if err != nil || len(list) != 3 {
		t.Fatalf("list after restart: %d, %v", len(list), err)
	}
}
