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
// of a refused ID get a permanent error, those of a flaky ID a temporary
// one. It delivers one result per call; BatchFeedbacker adds batches.
type Feedbacker struct {
	mu      sync.Mutex
	down    bool
	refused map[string]bool
	flaky   map[string]int
	results []*provision.Result
	stats   []*provision.Stats
	fails   int
}

var _ provision.Feedbacker = (*Feedbacker)(nil)

// NewFeedbacker returns a Feedbacker that is up.
func NewFeedbacker() *Feedbacker {
	return &Feedbacker{refused: make(map[string]bool), flaky: make(map[string]int)}
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

// Flaky makes the next n deliveries of results of id fail with a
// temporary error.
func (f *Feedbacker) Flaky(id string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flaky[id] = n
}

// Feedback records r, or fails while down or when r.ID is refused or
// flaky.
func (f *Feedbacker) Feedback(ctx context.Context, nodeID string, r *provision.Result) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		f.fails++
		return provision.Temporary(fmt.Errorf("delivering result %s: %w", r.ID, ErrDown))
	}
	return f.feedbackLocked(r)
}

// feedbackLocked records r unless its ID is refused or flaky. f.mu is held.
func (f *Feedbacker) feedbackLocked(r *provision.Result) error {
	switch {
	case f.refused[r.ID]:
		f.fails++
		return provision.Permanent(&provision.Refusal{Reason: "test-refused", Err: fmt.Errorf("delivering result %s: %w", r.ID, ErrRefused)})
	case f.flaky[r.ID] > 0:
		f.flaky[r.ID]--
		f.fails++
		return provision.Temporary(fmt.Errorf("delivering result %s: %w", r.ID, ErrDown))
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

// BatchFeedbacker is a Feedbacker that also implements
// provision.BatchFeedbacker: while down a batch fails as a whole with a
// temporary error, while batches are refused (RefuseBatches) with a
// permanent one; otherwise each result succeeds or fails on its own as
// with Feedback. It records the size of every batch it received.
type BatchFeedbacker struct {
	*Feedbacker

	bmu     sync.Mutex
	refuse  bool
	batches []int
}

var _ provision.BatchFeedbacker = (*BatchFeedbacker)(nil)

// NewBatchFeedbacker returns a BatchFeedbacker that is up.
func NewBatchFeedbacker() *BatchFeedbacker {
	return &BatchFeedbacker{Feedbacker: NewFeedbacker()}
}

// FeedbackBatch records the results of rs that are neither refused nor
// flaky, in order, and returns one error per result; it fails as a whole
// while down or while batches are refused.
func (b *BatchFeedbacker) FeedbackBatch(ctx context.Context, nodeID string, rs []*provision.Result) ([]error, error) {
	b.bmu.Lock()
	b.batches = append(b.batches, len(rs))
	refuse := b.refuse
	b.bmu.Unlock()
	if refuse {
		return nil, provision.Permanent(fmt.Errorf("delivering %d results: %w", len(rs), ErrRefused))
	}
	f := b.Feedbacker
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		f.fails++
		return nil, provision.Temporary(fmt.Errorf("delivering %d results: %w", len(rs), ErrDown))
	}
	errs := make([]error, len(rs))
	for i, r := range rs {
		errs[i] = f.feedbackLocked(r)
	}
	return errs, nil
}

// RefuseBatches makes every batch fail as a whole with a permanent error
// (an explorer without the batch endpoint), or lets them through again.
func (b *BatchFeedbacker) RefuseBatches(refuse bool) {
	b.bmu.Lock()
	defer b.bmu.Unlock()
	b.refuse = refuse
}

// Batches returns the size of every batch received, in order.
func (b *BatchFeedbacker) Batches() []int {
	b.bmu.Lock()
	defer b.bmu.Unlock()
	return slices.Clone(b.batches)
}
