package provisiontest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/edgeprov/provisiond/provision"
)

// Feedbacker is a provision.Feedbacker that records what it received, in
// order. While down it refuses everything with a temporary error; results
// of a refused ID get a permanent error.
type Feedbacker struct {
	mu      sync.Mutex
	down    bool
	refused map[string]bool
	results []*provision.Result
	stats   []*provision.Stats
	fails   int
}

var _ provision.Feedbacker = (*Feedbacker)(nil)

// NewFeedbacker returns a Feedbacker that is up.
func NewFeedbacker() *Feedbacker {
	return &Feedbacker{refused: make(map[string]bool)}
}

// SetDown takes the fake explorer down (true) or up.
func (f *Feedbacker) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// Refuse makes every result of id fail with a permanent error.
func (f *Feedbacker) Refuse(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refused[id] = true
}

// Feedback records r, or fails while down or when r.ID is refused.
func (f *Feedbacker) Feedback(ctx context.Context, nodeID string, r *provision.Result) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.down:
		f.fails++
		return provision.Temporary(fmt.Errorf("delivering result %s: %w", r.ID, ErrDown))
	case f.refused[r.ID]:
		f.fails++
		return provision.Permanent(fmt.Errorf("delivering result %s: %w", r.ID, ErrRefused))
	}
	c := *r
	f.results = append(f.results, &c)
	return nil
}

// UpdateStats records s, or fails while down.
func (f *Feedbacker) UpdateStats(ctx context.Context, nodeID string, s *provision.Stats) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		f.fails++
		return provision.Temporary(fmt.Errorf("delivering stats: %w", ErrDown))
	}
	c := *s
	f.stats = append(f.stats, &c)
	return nil
}

// Results returns every delivered result in order.
func (f *Feedbacker) Results() []*provision.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.results)
}

// ResultsFor returns the delivered results of id in order.
func (f *Feedbacker) ResultsFor(id string) []*provision.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*provision.Result
	for _, r := range f.results {
		if r.ID == id {
			out = append(out, r)
		}
	}
	return out
}

// Stats returns every delivered Stats in order.
func (f *Feedbacker) Stats() []*provision.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.stats)
}

// Failures returns how many deliveries were refused.
func (f *Feedbacker) Failures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fails
}
