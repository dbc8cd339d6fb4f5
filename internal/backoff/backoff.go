// Package backoff is provisiond's one retry policy: jittered exponential
// backoff with a cap. The engine's retries, the poll source, the outbox
// sender, the explorer client and the daemon's registration all wait by it.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is jittered exponential backoff: the wait before try n+1 (n ≥ 1)
// is Base·2^(n−1), capped at Max, of which a random half is jitter. A Max
// below Base is taken as Base.
type Policy struct {
	// Base is the wait after the first failure, before jitter.
	Base time.Duration
	// Max caps the wait, before jitter.
	Max time.Duration
}

// Ceiling returns the wait before try attempt+1 without its jitter
// (attempt ≥ 1; below 1 is taken as 1): min(Base·2^(attempt−1), Max).
// A container's restart waits exactly this (its owner reads the delay in
// its status); every other retry waits Delay.
func (p Policy) Ceiling(attempt int) time.Duration {
	limit := max(p.Max, p.Base)
	d := p.Base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// Delay returns the wait before try attempt+1 (attempt ≥ 1; below 1 is
// taken as 1): a random duration in [d/2, d] where d = Ceiling(attempt).
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Ceiling(attempt)
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(half+1)
}

// Sleep waits for d or until ctx ends; false when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
