package idlemem

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeRuntime counts releases; the test sets what was allocated.
type fakeRuntime struct {
	mu       sync.Mutex
	alloc    uint64
	freed    uint64
	releases int
}

func (f *fakeRuntime) allocate(n uint64) { f.mu.Lock(); f.alloc += n; f.mu.Unlock() }
func (f *fakeRuntime) allocated() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.alloc }
func (f *fakeRuntime) released() uint64  { f.mu.Lock(); defer f.mu.Unlock(); return f.freed }
func (f *fakeRuntime) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases++
	f.freed += 1 << 20
	f.alloc += 512 // a collection allocates a little too
}
func (f *fakeRuntime) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.releases }

func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &fakeRuntime{}
		var idle atomic.Bool
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			run(ctx, Options{Idle: idle.Load, Interval: time.Second, MinAlloc: 1000}, rt)
		}()
		step := func(want int, why string) {
			t.Helper()
			time.Sleep(time.Second)
			synctest.Wait()
			if got := rt.count(); got != want {
				t.Fatalf("%s: %d releases, want %d", why, got, want)
			}
		}

		// A burst while busy: nothing is released under load.
		rt.allocate(5000)
		step(0, "busy after a burst")
		step(0, "still busy")

		// Idle after the burst: one release, then none while little is allocated.
		idle.Store(true)
		step(1, "idle after a burst")
		rt.allocate(999 - 512) // with the collection's own 512 bytes: below MinAlloc
		step(1, "idle, below MinAlloc since the release")
		step(1, "idle, nothing new")

		// The next burst: released once idle again.
		idle.Store(false)
		rt.allocate(2000)
		step(1, "busy again")
		idle.Store(true)
		step(2, "idle after the second burst")

		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("Run did not return when its context ended")
		}
	})
}

// TestRunReleasesRealMemory runs against the Go runtime: after a burst of
// garbage, an idle check returns memory to the system.
func TestRunReleasesRealMemory(t *testing.T) {
	rt := newGoRuntime()
	before := rt.released()
	for range 64 {
		sink = make([]byte, 256<<10) // 16 MiB of garbage in all
	}
	sink = nil
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	released := make(chan struct{})
	var once sync.Once
	go run(ctx, Options{Idle: func() bool { return true }, Interval: 10 * time.Millisecond, MinAlloc: 8 << 20}, &notify{rt, func() { once.Do(func() { close(released) }) }})
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("no release within 10s after 16 MiB of garbage")
	}
	if after := rt.released(); after <= before {
		t.Fatalf("released heap %d bytes after, %d before: nothing returned", after, before)
	}
}

// sink keeps the compiler from dropping the test's allocations.
var sink []byte

// notify is the Go runtime, calling done after each release.
type notify struct {
	*goRuntime
	done func()
}

func (n *notify) release() { n.goRuntime.release(); n.done() }
