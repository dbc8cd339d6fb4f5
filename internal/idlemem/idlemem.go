// Package idlemem returns the Go heap's free memory to the operating
// system while the daemon is idle: after a burst of work, and then after
// each MiB the idle daemon allocates. Left alone, the runtime collects
// only when the heap reaches its goal (at least 4 MiB) and its background
// scavenger returns free memory over minutes, keeping a margin. An edge
// node's provisiond spends most of its life idle, and what it holds then
// is what the operator pays for.
package idlemem

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/rs/zerolog"
)

// Defaults of Options.
const (
	DefaultInterval = 15 * time.Second
	DefaultMinAlloc = 1 << 20
)

// Options configures Run.
type Options struct {
	// Idle reports whether the daemon has nothing to run. Required.
	Idle func() bool
	// Interval is how often Run asks Idle. Default: DefaultInterval.
	Interval time.Duration
	// MinAlloc is how many bytes must have been allocated since the last
	// release for the next to be worth its garbage collection. Idle with
	// 1,000 networks (BenchmarkIdleDaemon), provisiond allocated about
	// 1 MiB a minute and held 7.0 MB of anonymous memory instead of
	// 8.4-8.7 MB, for one collection of a 2 MiB live heap a minute.
	// Default: DefaultMinAlloc (1 MiB).
	MinAlloc uint64
	// Log receives one debug line per release. Default: disabled.
	Log zerolog.Logger
}

// runtimeMemory is what Run reads from and does to the Go runtime;
// tests replace it.
type runtimeMemory interface {
	allocated() uint64 // bytes allocated since the process started
	released() uint64  // heap bytes returned to the operating system
	release()          // collect garbage and return the free heap
}

type goRuntime struct{ samples []metrics.Sample }

func newGoRuntime() *goRuntime {
	return &goRuntime{samples: []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}}
}

func (g *goRuntime) read(i int) uint64 {
	metrics.Read(g.samples)
	if g.samples[i].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return g.samples[i].Value.Uint64()
}

func (g *goRuntime) allocated() uint64 { return g.read(0) }
func (g *goRuntime) released() uint64  { return g.read(1) }
func (g *goRuntime) release()          { debug.FreeOSMemory() }

// Run checks every Interval until ctx ends: when the daemon is idle and at
// least MinAlloc bytes were allocated since the last release (or since the
// process started, for the first), it collects garbage and returns the
// free heap to the operating system (debug.FreeOSMemory). A release costs
// one garbage collection of the live heap, a few milliseconds for a
// daemon holding thousands of records.
func Run(ctx context.Context, opts Options) {
	run(ctx, opts, newGoRuntime())
}

func run(ctx context.Context, opts Options, rt runtimeMemory) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.MinAlloc == 0 {
		opts.MinAlloc = DefaultMinAlloc
	}
	t := time.NewTicker(opts.Interval)
	defer t.Stop()
	var last uint64 // start-up, such as recovery, counts as a burst
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		since := rt.allocated() - last
		if since < opts.MinAlloc || !opts.Idle() {
			continue
		}
		before := rt.released()
		rt.release()
		last = rt.allocated()
		opts.Log.Debug().Uint64("allocated_since_last", since).Int64("returned", int64(rt.released()-before)).
			Msg("idle: returned free heap memory to the system")
	}
}
