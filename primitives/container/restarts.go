package container

import (
	"sync"
	"time"
)

// exits counts the exits of each container within a sliding window. It is
// in memory: a daemon restart forgets the counts, which only delays giving
// up.
type exits struct {
	now    func() time.Time
	window time.Duration

	mu sync.Mutex
	at map[string][]time.Time
}

func newExits(now func() time.Time, window time.Duration) *exits {
	return &exits{now: now, window: window, at: map[string][]time.Time{}}
}

// record notes an exit of id now and returns how many exits of id fall in
// the window ending now.
func (e *exits) record(id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	kept := e.at[id][:0]
	for _, t := range e.at[id] {
		if now.Sub(t) < e.window {
			kept = append(kept, t)
		}
	}
	kept = append(kept, now)
	e.at[id] = kept
	return len(kept)
}

// forget drops the history of id.
func (e *exits) forget(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.at, id)
}
