package engine_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shirou/gopsutil/v3/cpu"
	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/cache"
	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// countHooks closes done when n reservations were deployed.
type countHooks struct {
	engine.NopHooks
	n        int64
	deployed atomic.Int64
	done     chan struct{}
}

func (h *countHooks) Transition(_ provision.ReservationType, to provision.State) {
	if to == provision.Deployed && h.deployed.Add(1) == h.n {
		close(h.done)
	}
}

// BenchmarkEngineThroughput measures reservations per second from the
// source to deployed (validated, persisted, admitted, provisioned by an
// instant provisioner, result signed and written with the outbox), with
// the memory store and the bbolt store of package cache (with and without
// fsync), and the CPU time the process spent per reservation meanwhile
// (the outbox sender's work included), with the cores it kept busy and,
// on Linux, the share of the machine's CPU time the hypervisor took
// meanwhile (steal-%: a shared virtual machine's rate drops with it).
func BenchmarkEngineThroughput(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) provision.Store
	}{
		{"memory", func(*testing.B) provision.Store { return provisiontest.NewStore() }},
		{"bbolt-nosync", func(b *testing.B) provision.Store { return openBolt(b, true) }},
		{"bbolt", func(b *testing.B) provision.Store { return openBolt(b, false) }},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			user := provisiontest.NewUser(1)
			signer, _ := provisiontest.NewNodeSigner(1)
			now := time.Now()
			rs := make([]*provision.Reservation, b.N)
			for i := range rs {
				rs[i] = user.Volume(fmt.Sprintf("r%d", i), testNode, 1, now, 24*time.Hour)
			}
			src := provisiontest.NewScriptedSource()
			hooks := &countHooks{n: int64(b.N), done: make(chan struct{})}
			eng := engine.New(engine.Options{
				NodeID:     testNode,
				Source:     src,
				Store:      st.open(b),
				Primitives: provisiontest.NewRecordingPrimitives(),
				Signer:     signer,
				Statser: provisiontest.NewStatser(provision.Capacity{
					Total: provision.Units{CRU: 64, MRU: 256, SRU: 1e9, HRU: 1e9},
				}),
				Feedbacker: provisiontest.NewFeedbacker(),
				Hooks:      hooks,
				OutboxRate: rate.Inf,
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- eng.Run(ctx) }()
			b.ResetTimer()
			cpu0 := cpuTime(b)
			steal0, total0, stealOK := stealTime()
			start := time.Now()
			go func() {
				for _, r := range rs {
					if src.Send(ctx, provision.ReservationJob{Reservation: r}) != nil {
						return
					}
				}
			}()
			<-hooks.done
			elapsed := time.Since(start)
			cpu := cpuTime(b) - cpu0
			b.StopTimer()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "reservations/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/reservation")
			b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cores")
			if steal1, total1, ok := stealTime(); ok && stealOK && total1 > total0 {
				b.ReportMetric(100*(steal1-steal0)/(total1-total0), "steal-%")
			}
		})
	}
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// stealTime returns the machine's CPU time stolen by the hypervisor and
// its CPU time in all, in seconds since boot (gopsutil's reading of
// /proc/stat); ok is false where that is not available. On a shared
// virtual machine the engine's rate drops by the share stolen during the
// run.
func stealTime() (steal, total float64, ok bool) {
	ts, err := cpu.Times(false)
	if err != nil || len(ts) != 1 {
		return 0, 0, false
	}
	t := ts[0] // guest time is counted in user and nice already
	return t.Steal, t.User + t.Nice + t.System + t.Idle + t.Iowait + t.Irq + t.Softirq + t.Steal, true
}

func openBolt(b *testing.B, noSync bool) provision.Store {
	b.Helper()
	s, err := cache.Open(filepath.Join(b.TempDir(), "cache.db"), cache.Options{NoSync: noSync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}
