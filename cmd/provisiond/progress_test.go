package main

import (
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/engine"
)

// TestProgressCheck is the watchdog's rule: feed while the engine is idle
// or makes progress; stop when an operation outlives its timeout or
// queued work sees no operation start or end.
func TestProgressCheck(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	const limit = time.Minute
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type step struct {
		st      engine.Status
		now     time.Duration
		healthy bool
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"stopped", []step{{engine.Status{}, 0, false}}},
		{"idle-for-long", []step{{engine.Status{Running: true}, time.Hour, true}}},
		{"waiting-only-sleeps", []step{{engine.Status{Running: true, Waiting: 9}, time.Hour, true}}},
		{"busy-and-progressing", []step{
			{engine.Status{Running: true, Busy: 4, Queued: 50, OldestOp: at(10 * time.Minute), LastProgress: at(10*time.Minute + 50*time.Second)}, 11 * time.Minute, true},
		}},
		{"long-operation-within-timeout", []step{
			{engine.Status{Running: true, Busy: 1, OldestOp: at(0), LastProgress: at(0)}, 59 * time.Second, true},
		}},
		{"operation-past-timeout", []step{
			{engine.Status{Running: true, Busy: 1, Queued: 3, OldestOp: at(0), LastProgress: at(0)}, 61 * time.Second, false},
		}},
		{"one-stuck-worker-among-busy-ones", []step{
			{engine.Status{Running: true, Busy: 4, OldestOp: at(0), LastProgress: at(2 * time.Minute)}, 2 * time.Minute, false},
		}},
		{"queued-but-no-worker-takes-it", []step{
			{engine.Status{Running: true}, 5 * time.Minute, true},
			{engine.Status{Running: true, Queued: 2, LastProgress: at(time.Minute)}, 5*time.Minute + 30*time.Second, true},
			{engine.Status{Running: true, Queued: 2, LastProgress: at(time.Minute)}, 6*time.Minute + time.Second, false},
		}},
		{"recovers", []step{
			{engine.Status{Running: true, Busy: 1, OldestOp: at(0), LastProgress: at(0)}, 2 * time.Minute, false},
			{engine.Status{Running: true}, 3 * time.Minute, true},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &progress{limit: limit, idle: t0}
			for i, s := range c.steps {
				err := p.check(s.st, at(s.now))
				if (err == nil) != s.healthy {
					t.Fatalf("step %d (%+v at +%s): check = %v, want healthy %v", i, s.st, s.now, err, s.healthy)
				}
			}
		})
	}
}
