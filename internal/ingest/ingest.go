// Package ingest runs the jobs of a source concurrently, those of one
// shard in the order they were added, with a bound on the jobs taken and
// not yet run. The Engine ingests its source's jobs through a Queue
// sharded by reservation ID, so that the jobs of one reservation keep the
// source's order while the writes of others share commits.
package ingest

import (
	"context"
	"sync"
)

// Queue runs jobs on their shards: up to one goroutine a shard, which runs
// only while its shard has jobs, so an idle Queue holds none.
type Queue[J any] struct {
	ctx     context.Context
	run     func(context.Context, J)
	shardOf func(J) int
	wg      *sync.WaitGroup // the owner's: it waits for the shards' goroutines
	slots   chan struct{}   // a token per job taken and not yet run
	pending sync.WaitGroup  // jobs added and not yet done
	shards  []shard[J]
}

// shard is the queue of one shard; running tells whether a goroutine
// drains it.
type shard[J any] struct {
	mu      sync.Mutex
	queue   []J
	running bool
}

// New returns a Queue of shards shards (at least 1) that runs each job
// with run on shard shardOf(job) (taken modulo shards), holding at most
// inFlight jobs (at least 1) added and not yet run. Its goroutines are
// started in wg, which the owner waits for; they end when ctx ends.
func New[J any](ctx context.Context, wg *sync.WaitGroup, shards, inFlight int, shardOf func(J) int, run func(context.Context, J)) *Queue[J] {
	return &Queue[J]{
		ctx:     ctx,
		run:     run,
		shardOf: shardOf,
		wg:      wg,
		slots:   make(chan struct{}, max(inFlight, 1)),
		shards:  make([]shard[J], max(shards, 1)),
	}
}

// Add queues job on its shard, starting the shard's goroutine when none
// runs. It waits while inFlight jobs are in flight; after ctx ended it
// drops job, which is never run.
func (q *Queue[J]) Add(job J) {
	select {
	case q.slots <- struct{}{}:
	case <-q.ctx.Done():
		return
	}
	q.pending.Add(1)
	sh := &q.shards[q.shardOf(job)%len(q.shards)]
	sh.mu.Lock()
	sh.queue = append(sh.queue, job)
	start := !sh.running
	sh.running = true
	sh.mu.Unlock()
	if start {
		q.wg.Go(func() { q.drain(sh) })
	}
}

// Wait waits until every job added before it was run (or dropped because
// ctx ended).
func (q *Queue[J]) Wait() { q.pending.Wait() }

// drain runs the jobs of sh in order until its queue is empty.
func (q *Queue[J]) drain(sh *shard[J]) {
	for {
		sh.mu.Lock()
		if len(sh.queue) == 0 {
			sh.queue, sh.running = nil, false
			sh.mu.Unlock()
			return
		}
		job := sh.queue[0]
		sh.queue = sh.queue[1:]
		sh.mu.Unlock()
		if q.ctx.Err() == nil { // after ctx ended, drop it
			q.run(q.ctx, job)
		}
		q.pending.Done()
		<-q.slots
	}
}
