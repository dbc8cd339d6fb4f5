package pgstore_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/explorer/server/pgstore"
	"github.com/edgeprov/provisiond/internal/pgtest"
)

// fleetNodes is the size of the simulated fleet (issue 19, item 7).
const fleetNodes = 10_000

// fleetRate is the steady rate, in reservations per second, at which the
// user of the paced phase submits.
const fleetRate = 200

// BenchmarkFleet has 10,000 simulated nodes long-poll the explorer while a
// user submits reservations to them, and measures per reservation the time
// from its acceptance (the 201 in the user's hands) to the moment its
// node's long-poll returns it, and the reservations accepted per second.
//
// The explorers run in processes of their own, as explorerd does: this
// test binary started again as a replica (serveReplica: a server.Server on
// a loopback port, on pgstore or bbolt). One process could not hold both
// ends of 10,000 connections here anyway: RLIMIT_NOFILE's hard limit is
// 20,000 and raising it needs CAP_SYS_RESOURCE. This process holds the
// nodes' 10,000 client sockets; each replica its share of the server
// sockets and its PostgreSQL connections (a pool of up to 16 and one for
// LISTEN).
//
// store=postgres runs two replicas on one PostgreSQL cluster (pgtest). The
// nodes are spread over the two, and every reservation is submitted
// through the other replica than the one its node polls: each delivery
// crosses from one explorerd to the other by NOTIFY. store=bbolt runs the
// same load on one explorer (bbolt is one process), in the same run.
//
// Each store runs two phases on the same fleet: paced-200 (one reservation
// every 5 ms, to the nodes in turn, 8 submitters) and burst (8 concurrent
// submitters, as fast as the explorer accepts). PostgreSQL runs as pgtest
// runs it (fsync off), bbolt without fsync: neither pays for durability.
func BenchmarkFleet(b *testing.B) {
	raiseFleetFileLimit(b, fleetNodes+1000)
	b.Run("store=postgres", func(b *testing.B) {
		dsn := pgtest.Shared(b).NewDB(b)
		// Migrate once, before the replicas start side by side.
		st, err := pgstore.Open(b.Context(), pgstore.Config{URL: dsn})
		if err != nil {
			b.Fatal(err)
		}
		st.Close()
		newFleet().run(b, []*replicaProc{startReplicaProc(b, "dsn="+dsn), startReplicaProc(b, "dsn="+dsn)})
	})
	b.Run("store=bbolt", func(b *testing.B) {
		newFleet().run(b, []*replicaProc{startReplicaProc(b, "dir="+b.TempDir())})
	})
}

func raiseFleetFileLimit(b *testing.B, need uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	// Root with CAP_SYS_RESOURCE may raise the hard limit as well.
	want := syscall.Rlimit{Cur: need, Max: max(need, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return
	}
	if lim.Max < need {
		b.Skipf("RLIMIT_NOFILE hard limit %d is below the %d files needed", lim.Max, need)
	}
	lim.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("raising RLIMIT_NOFILE to %d: %v", need, err)
	}
}

// replicaEnv, set in a child of the test binary, makes it a replica:
// "dsn=<url>" serves on PostgreSQL, "dir=<path>" on bbolt. With
// replicaEnv_CPUPROFILE=<path> set, each replica writes a CPU profile to
// <path>.<pid>.
const replicaEnv = "PGSTORE_FLEET_REPLICA"

// serveReplica is the child: it serves an explorer on a loopback port,
// writes "listening <addr>" and then "held <n>" (the polls that started
// waiting so far) whenever n changed, and shuts down when its standard
// input closes.
func serveReplica(spec string) int {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintln(os.Stderr, "raising RLIMIT_NOFILE:", err)
			return 1
		}
	}
	if path := os.Getenv(replicaEnv + "_CPUPROFILE"); path != "" {
		// For tuning: each replica profiles itself into path.<pid>.
		f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	var held atomic.Int64
	// One address registers and polls for 10,000 nodes: the per-address
	// and per-key limits are off, as in the other explorer benchmarks.
	cfg := server.Config{OnHold: func(string) { held.Add(1) }, Limits: server.Limits{Off: true}}
	kind, arg, _ := strings.Cut(spec, "=")
	switch kind {
	case "dsn":
		st, err := pgstore.Open(context.Background(), pgstore.Config{URL: arg})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cfg.Store = st
	case "dir":
		cfg.DataDir, cfg.NoSync = arg, true
	default:
		fmt.Fprintf(os.Stderr, "%s: want dsn=<url> or dir=<path>, got %q\n", replicaEnv, spec)
		return 2
	}
	srv, err := server.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	fmt.Printf("listening %s\n", ln.Addr())
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	last := int64(-1)
	for {
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			return 0
		case <-t.C:
			if n := held.Load(); n != last {
				fmt.Printf("held %d\n", n)
				last = n
			}
		}
	}
}

// replicaProc is a running replica process.
type replicaProc struct {
	url  string
	pid  int
	held atomic.Int64
}

// startReplicaProc starts this test binary as a replica serving spec (see
// replicaEnv) and stops it when the benchmark ends.
func startReplicaProc(b *testing.B, spec string) *replicaProc {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), replicaEnv+"="+spec)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting a replica: %v", err)
	}
	rp := &replicaProc{pid: cmd.Process.Pid}
	b.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("replica %d: %v", rp.pid, err)
		}
	})
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "listening ") {
		b.Fatalf("replica %d did not start: %q %v", rp.pid, sc.Text(), sc.Err())
	}
	rp.url = "http://" + strings.TrimPrefix(sc.Text(), "listening ")
	go func() {
		for sc.Scan() {
			if n, err := strconv.ParseInt(strings.TrimPrefix(sc.Text(), "held "), 10, 64); err == nil {
				rp.held.Store(n)
			}
		}
	}()
	return rp
}

// fleet is the simulated nodes and what they saw.
type fleet struct {
	ids      []string
	posted   []atomic.Int64 // unix ns the user sent it, per reservation
	accepted []atomic.Int64 // unix ns of the 201, per reservation
	seen     chan delivery
}

// delivery is reservation k in its node's hands at unix ns at.
type delivery struct {
	k  int
	at int64
}

func newFleet() *fleet {
	return &fleet{ids: make([]string, fleetNodes), posted: make([]atomic.Int64, 1<<22), accepted: make([]atomic.Int64, 1<<22), seen: make(chan delivery, 1<<20)}
}

func (f *fleet) run(b *testing.B, reps []*replicaProc) {
	urls := make([]string, len(reps))
	for i, rp := range reps {
		urls[i] = rp.url
	}
	heapBefore, _ := memNow()
	transports := make([]*http.Transport, len(urls))
	for i := range transports {
		transports[i] = &http.Transport{MaxIdleConns: 2 * fleetNodes, MaxIdleConnsPerHost: 2 * fleetNodes, IdleConnTimeout: 2 * time.Minute}
		defer transports[i].CloseIdleConnections()
	}
	opts := explorertest.ClientOptions()
	opts.PollWait = 55 * time.Second // no idle re-polls during a phase
	clients := make([]*explorer.Client, fleetNodes)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	start := time.Now()
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < fleetNodes && failed.Load() == nil; i += 16 {
				key := explorertest.NewKey(b)
				o := opts
				o.Transport = transports[i%len(urls)]
				clients[i] = explorer.NewClient(urls[i%len(urls)], key, o)
				f.ids[i] = explorertest.NodeID(key)
				if err := clients[i].Register(b.Context()); err != nil {
					failed.Store(&err)
				}
			}
		})
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		b.Fatalf("registering the fleet: %v", *p)
	}
	b.Logf("%d nodes registered in %s", fleetNodes, time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithCancel(context.Background())
	for i := range fleetNodes {
		wg.Go(func() { f.poll(ctx, clients[i]) })
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	deadline := time.Now().Add(2 * time.Minute)
	held := func() (n int64) {
		for _, rp := range reps {
			n += rp.held.Load()
		}
		return n
	}
	for held() < fleetNodes && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if held() < fleetNodes {
		b.Fatalf("only %d of %d polls held", held(), fleetNodes)
	}
	heapHeld, rssHeld := memNow()
	var rssServers uint64
	for _, rp := range reps {
		rssServers += rssOf(rp.pid)
		b.Logf("replica %d: RSS %d MiB, %d open files", rp.pid, rssOf(rp.pid)>>20, openFiles(rp.pid))
	}
	b.Logf("fleet polling: clients' heap %d MiB, RSS %d MiB, %d open files", heapHeld>>20, rssHeld>>20, openFiles(os.Getpid()))

	user := explorertest.NewKey(b)
	users := make([]*explorer.Client, len(urls))
	for i, u := range urls {
		o := explorertest.ClientOptions()
		o.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
		users[i] = explorer.NewUserClient(u, user, o)
	}
	var next atomic.Int64
	submit := func(ctx context.Context) error {
		k := int(next.Add(1)) - 1
		node := k % fleetNodes
		r := explorertest.Volume(f.ids[node], 1)
		r.Reference = strconv.Itoa(k)
		r.Sign(user)
		f.posted[k].Store(time.Now().UnixNano())
		// The other replica than the node's: the delivery crosses by NOTIFY.
		if _, err := users[(node+1)%len(urls)].CreateReservation(ctx, r); err != nil {
			return err
		}
		f.accepted[k].Store(time.Now().UnixNano())
		return nil
	}
	for _, ph := range []struct {
		name    string
		workers int
		every   time.Duration
		least   int // reservations per run at the least, for a p99 of weight
	}{{fmt.Sprintf("paced-%d", fleetRate), 8, time.Second / fleetRate, 15 * fleetRate}, {"burst", 8, 0, 5000}} {
		b.Run(ph.name, func(b *testing.B) {
			// One run of at least ph.least reservations, whatever b.N
			// (a run longer than -benchtime is not repeated); ns/op is
			// reported per reservation.
			count := max(b.N, ph.least)
			f.drain()
			before := next.Load()
			jobs := make(chan struct{}, 1024)
			var sent sync.WaitGroup
			var errs atomic.Int64
			var wk sync.WaitGroup
			for range ph.workers {
				wk.Go(func() {
					for range jobs {
						if err := submit(b.Context()); err != nil && errs.Add(1) == 1 {
							b.Errorf("submitting: %v", err)
						}
						sent.Done()
					}
				})
			}
			t0 := time.Now()
			tick := t0
			for range count {
				if ph.every > 0 {
					tick = tick.Add(ph.every)
					time.Sleep(time.Until(tick))
				}
				sent.Add(1)
				jobs <- struct{}{}
			}
			close(jobs)
			sent.Wait()
			wk.Wait()
			elapsed := time.Since(t0)
			n := int(next.Load() - before)
			lat, fromPost, early, err := f.collect(n - int(errs.Load()))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(count), "ns/op")
			b.ReportMetric(float64(n-int(errs.Load()))/elapsed.Seconds(), "accepted/s")
			b.ReportMetric(pct(lat, 50), "p50-ms")
			b.ReportMetric(pct(lat, 99), "p99-ms")
			b.ReportMetric(pct(lat, 100), "max-ms")
			b.ReportMetric(pct(fromPost, 99), "p99-post-ms")
			b.ReportMetric(float64(heapHeld-min(heapBefore, heapHeld))/(1<<20), "client-heap-MB")
			b.ReportMetric(float64(rssHeld)/(1<<20), "client-rss-MB")
			b.ReportMetric(float64(rssServers)/(1<<20), "server-rss-MB")
			b.ReportMetric(float64(early), "early")
		})
	}
}

// poll is one node: it long-polls from its cursor and records when each
// reservation reached it.
func (f *fleet) poll(ctx context.Context, c *explorer.Client) {
	var cursor uint64
	for ctx.Err() == nil {
		evs, next, err := c.Poll(ctx, cursor)
		if err != nil {
			continue
		}
		now := time.Now().UnixNano()
		for _, ev := range evs {
			k, err := strconv.Atoi(ev.Reservation.Reference)
			if err != nil || k < 0 || k >= len(f.accepted) {
				continue
			}
			select {
			case f.seen <- delivery{k, now}:
			case <-ctx.Done():
				return
			}
		}
		cursor = next
	}
}

// drain empties the deliveries of an earlier phase.
func (f *fleet) drain() {
	for {
		select {
		case <-f.seen:
		default:
			return
		}
	}
}

// collect waits for n deliveries and returns the time from each
// reservation's 201 to its delivery and from its POST to its delivery,
// both sorted, and how many reached their node before the 201 reached the
// user (the explorer notifies on commit, before it answers): those count
// as 0 in the first.
func (f *fleet) collect(n int) (lat, fromPost []time.Duration, early int, err error) {
	lat, fromPost = make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	timeout := time.After(2 * time.Minute)
	for len(lat) < n {
		select {
		case d := <-f.seen:
			acc := f.accepted[d.k].Load()
			if acc == 0 {
				return nil, nil, 0, fmt.Errorf("reservation %d delivered but never accepted", d.k)
			}
			l := time.Duration(d.at - acc)
			if l < 0 {
				early++
				l = 0
			}
			lat = append(lat, l)
			fromPost = append(fromPost, time.Duration(d.at-f.posted[d.k].Load()))
		case <-timeout:
			return nil, nil, 0, fmt.Errorf("%d of %d reservations delivered within 2 minutes", len(lat), n)
		}
	}
	slices.Sort(lat)
	slices.Sort(fromPost)
	return lat, fromPost, early, nil
}

// pct returns the p-th percentile of sorted latencies in milliseconds.
func pct(sorted []time.Duration, p int) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	return float64(sorted[min(len(sorted)*p/100, len(sorted)-1)].Microseconds()) / 1000
}

// memNow returns the Go heap in use after a collection and the resident
// set of this process, in bytes.
func memNow() (heap, rss uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, rssOf(os.Getpid())
}

// rssOf returns the resident set of process pid in bytes, 0 if unknown.
func rssOf(pid int) uint64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		var kb uint64
		if _, err := fmt.Sscanf(sc.Text(), "VmRSS: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}

// openFiles counts the open file descriptors of process pid.
func openFiles(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}
