package ingest_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/ingest"
)

type job struct{ shard, seq int }

// Jobs of one shard run in the order they were added, one at a time;
// jobs of different shards run at the same time; Wait returns once every
// added job ran.
func TestQueueOrderPerShard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu      sync.Mutex
			ran     = map[int][]int{}
			running atomic.Int32
			most    atomic.Int32
		)
		var wg sync.WaitGroup
		q := ingest.New(t.Context(), &wg, 4, 100, func(j job) int { return j.shard }, func(_ context.Context, j job) {
			n := running.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			mu.Lock()
			ran[j.shard] = append(ran[j.shard], j.seq)
			mu.Unlock()
			running.Add(-1)
		})
		for seq := range 10 {
			for sh := range 4 {
				q.Add(job{sh, seq})
			}
		}
		q.Wait()
		for sh := range 4 {
			if want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(ran[sh], want) {
				t.Errorf("shard %d ran %v, want %v", sh, ran[sh], want)
			}
		}
		if got := most.Load(); got != 4 {
			t.Errorf("at most %d jobs ran at once, want 4 (one a shard)", got)
		}
		wg.Wait() // the shards' goroutines end once their queues are empty
	})
}

// Add waits while inFlight jobs are taken and not yet run, and after ctx
// ended it drops the job: it never runs.
func TestQueueBoundAndCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		release := make(chan struct{})
		var ran atomic.Int32
		var wg sync.WaitGroup
		q := ingest.New(ctx, &wg, 2, 2, func(j job) int { return j.shard }, func(context.Context, job) {
			<-release
			ran.Add(1)
		})
		q.Add(job{0, 0})
		q.Add(job{1, 0})
		added := make(chan struct{})
		go func() {
			q.Add(job{0, 1})
			close(added)
		}()
		synctest.Wait()
		select {
		case <-added:
			t.Fatal("a third job was taken with two in flight")
		default:
		}
		cancel()
		synctest.Wait()
		<-added // Add returned: ctx ended, the job was dropped
		close(release)
		q.Wait()
		wg.Wait()
		if got := ran.Load(); got != 2 {
			t.Errorf("%d jobs ran, want the 2 taken before ctx ended", got)
		}
		q.Add(job{1, 1}) // after ctx ended: dropped at once
		q.Wait()
		if got := ran.Load(); got != 2 {
			t.Errorf("%d jobs ran after a job added past ctx's end, want 2", got)
		}
	})
}
