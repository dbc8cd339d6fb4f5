package server_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/provision"
)

// raiseFileLimit lifts RLIMIT_NOFILE to its hard limit: every simulated
// node holds a client and a server socket.
func raiseFileLimit(b *testing.B, need uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur < need {
		lim.Cur = min(max(need, lim.Cur), lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			b.Fatalf("raising RLIMIT_NOFILE to %d: %v", lim.Cur, err)
		}
	}
	if lim.Cur < need {
		b.Skipf("RLIMIT_NOFILE hard limit %d is below the %d sockets needed", lim.Max, need)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkLongPollNodes has N simulated nodes long-poll one explorer on
// loopback while reservations are published to them one after the other;
// it reports the delivery latency (from submission to the node's hands)
// and the heap of the process (server and clients) with every poll held.
func BenchmarkLongPollNodes(b *testing.B) {
	for _, n := range []int{500, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) { benchLongPoll(b, n) })
	}
}

func benchLongPoll(b *testing.B, n int) {
	raiseFileLimit(b, uint64(2*n+1000))
	var held atomic.Int64
	allHeld := make(chan struct{})
	var once sync.Once
	heapBefore := heapInUse()
	xs := explorertest.NewWithConfig(b, server.Config{NoSync: true, Limits: server.Limits{Off: true}, OnHold: func(string) {
		if held.Add(1) == int64(n) {
			once.Do(func() { close(allHeld) })
		}
	}})
	tr := &http.Transport{MaxIdleConns: 2 * n, MaxIdleConnsPerHost: 2 * n, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	opts := explorertest.ClientOptions()
	opts.Transport = tr
	opts.PollWait = 55 * time.Second // no idle re-polls during the run

	nodes := make([]ed25519.PrivateKey, n)
	clients := make([]*explorer.Client, n)
	var reg sync.WaitGroup
	for w := range 8 {
		reg.Add(1)
		go func() {
			defer reg.Done()
			for i := w; i < n; i += 8 {
				nodes[i] = explorertest.NewKey(b)
				clients[i] = explorer.NewClient(xs.URL(), nodes[i], opts)
				if err := clients[i].Register(b.Context()); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	reg.Wait()
	if b.Failed() {
		return
	}

	ctx, cancel := context.WithCancel(b.Context())
	var (
		mu        sync.Mutex
		latencies []time.Duration
		delivered = make(chan struct{}, 1<<16)
		pollers   sync.WaitGroup
	)
	for i := range n {
		pollers.Add(1)
		go func() {
			defer pollers.Done()
			var cursor uint64
			for ctx.Err() == nil {
				evs, next, err := clients[i].Poll(ctx, cursor)
				if err != nil {
					continue
				}
				now := time.Now()
				for _, ev := range evs {
					sent, err := strconv.ParseInt(ev.Reservation.Reference, 10, 64)
					if err != nil {
						continue
					}
					mu.Lock()
					latencies = append(latencies, now.Sub(time.Unix(0, sent)))
					mu.Unlock()
					delivered <- struct{}{}
				}
				cursor = next
			}
		}()
	}
	defer func() {
		cancel()
		xs.Explorer().Release()
		pollers.Wait()
	}()
	select {
	case <-allHeld:
	case <-time.After(2 * time.Minute):
		b.Fatalf("only %d of %d polls held", held.Load(), n)
	}
	heapHeld := heapInUse()

	user := explorertest.NewKey(b)
	uc := xs.UserClient(user)
	sent := 0
	for b.Loop() {
		r := explorertest.Volume(explorertest.NodeID(nodes[sent%n]), 1)
		r.Reference = strconv.FormatInt(time.Now().UnixNano(), 10)
		r.Sign(user)
		if _, err := uc.CreateReservation(b.Context(), r); err != nil {
			b.Fatal(err)
		}
		sent++
		// Keep the held set realistic: wait for the delivery before the next
		// publish, so each event meets a waiting node.
		select {
		case <-delivered:
		case <-time.After(time.Minute):
			b.Fatalf("event %d not delivered", sent)
		}
	}
	b.StopTimer()
	mu.Lock()
	slices.Sort(latencies)
	got := len(latencies)
	p50, p99 := latencies[got*50/100], latencies[min(got*99/100, got-1)]
	mu.Unlock()
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(heapHeld-min(heapBefore, heapHeld))/(1<<20), "heap-MB")
	b.ReportMetric(float64(heapHeld-min(heapBefore, heapHeld))/float64(n)/1024, "heap-KB/node")
}

// BenchmarkCreateReservation submits signed reservations one after the
// other through the API (signing, verification, one bbolt commit and a
// publish each) and reports reservations per second.
func BenchmarkCreateReservation(b *testing.B) {
	for _, tt := range []struct {
		name   string
		noSync bool
	}{{"fsync", false}, {"nosync", true}} {
		b.Run(tt.name, func(b *testing.B) {
			xs := explorertest.NewWithConfig(b, server.Config{NoSync: tt.noSync, Limits: server.Limits{Off: true}})
			node, user := explorertest.NewKey(b), explorertest.NewKey(b)
			xs.RegisterNode(b, node)
			uc := xs.UserClient(user)
			nodeID := explorertest.NodeID(node)
			i := 0
			start := time.Now()
			for b.Loop() {
				r := explorertest.Volume(nodeID, 1)
				r.Reference = strconv.Itoa(i)
				i++
				r.Sign(user)
				if _, err := uc.CreateReservation(b.Context(), r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(i)/time.Since(start).Seconds(), "reservations/s")
		})
	}
}

// BenchmarkResults delivers a node's signed results to an explorer with
// fsync on, through the node's client: one PUT per result in series, one
// PUT per result from 8 concurrent senders (sharing commits through the
// group commit), and batches of 16, 64 and 256 results per POST. Each
// result is newer than the one stored, so each is verified and written.
// It reports results per second.
func BenchmarkResults(b *testing.B) {
	for _, tt := range []struct {
		name         string
		batch, conns int
	}{{"put", 1, 1}, {"put-8-concurrent", 1, 8}, {"batch=16", 16, 1}, {"batch=64", 64, 1}, {"batch=256", 256, 1}} {
		b.Run(tt.name, func(b *testing.B) { benchResults(b, tt.batch, tt.conns) })
	}
}

func benchResults(b *testing.B, batch, conns int) {
	xs := explorertest.NewWithConfig(b, server.Config{Limits: server.Limits{Off: true}})
	node, user := explorertest.NewKey(b), explorertest.NewKey(b)
	nc := xs.RegisterNode(b, node)
	nodeID := explorertest.NodeID(node)
	const pool = 256
	rvs := make([]*provision.Reservation, pool)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < pool; i += 8 {
				r := explorertest.Volume(nodeID, 1)
				r.Reference = strconv.Itoa(i)
				xs.Reserve(b, user, r)
				rvs[i] = r
			}
		})
	}
	wg.Wait()
	base := time.Now().UTC()
	rs := make([]*provision.Result, b.N)
	for i := range rs {
		rv := rvs[i%pool]
		rs[i] = &provision.Result{Type: rv.Type, ID: rv.ID, NodeID: nodeID, Digest: rv.Digest(), Created: base.Add(time.Duration(i)), State: provision.StateOk}
		if err := rs[i].Sign(provision.KeySigner(node)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	for range conns {
		wg.Go(func() {
			for {
				i := int(next.Add(int64(batch))) - batch
				if i >= len(rs) {
					return
				}
				chunk := rs[i:min(i+batch, len(rs))]
				if batch == 1 {
					if err := nc.Feedback(b.Context(), nodeID, chunk[0]); err != nil {
						b.Error(err)
						return
					}
					continue
				}
				errs, err := nc.FeedbackBatch(b.Context(), nodeID, chunk)
				if err == nil {
					err = errors.Join(errs...)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "results/s")
}
