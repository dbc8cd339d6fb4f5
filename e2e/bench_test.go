package e2e

import (
	"context"
	"crypto/ed25519"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/cache"
	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/source"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/network"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// ackFeedbacker is the node's explorer.Client as the Engine's Feedbacker
// and BatchFeedbacker; it notes when the explorer acknowledged (verified
// and stored) the first result of each reservation, and closes done at the
// want-th. A result counts only when the explorer accepted it: a refused
// result of a batch is not acknowledged.
type ackFeedbacker struct {
	*explorer.Client
	want int
	done chan struct{}

	mu    sync.Mutex
	acked map[string]time.Time
}

// The Engine finds the batch path by type assertion: the wrapper must
// offer it itself, or the promoted method would skip the bookkeeping.
var _ provision.BatchFeedbacker = (*ackFeedbacker)(nil)

func newAckFeedbacker(c *explorer.Client, want int) *ackFeedbacker {
	return &ackFeedbacker{Client: c, want: want, done: make(chan struct{}), acked: make(map[string]time.Time, want)}
}

// Feedback delivers r and notes the time of the explorer's answer.
func (f *ackFeedbacker) Feedback(ctx context.Context, nodeID string, r *provision.Result) error {
	if err := f.Client.Feedback(ctx, nodeID, r); err != nil {
		return err
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ack(r.ID, now)
	return nil
}

// FeedbackBatch delivers rs and notes the time of the explorer's answer
// for each result it accepted.
func (f *ackFeedbacker) FeedbackBatch(ctx context.Context, nodeID string, rs []*provision.Result) ([]error, error) {
	errs, err := f.Client.FeedbackBatch(ctx, nodeID, rs)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range rs {
		if errs[i] == nil {
			f.ack(r.ID, now)
		}
	}
	return errs, nil
}

// ack notes that the result of id was acknowledged at now, unless one
// was before; f.mu is held.
func (f *ackFeedbacker) ack(id string, now time.Time) {
	if _, seen := f.acked[id]; seen {
		return
	}
	f.acked[id] = now
	if len(f.acked) == f.want {
		close(f.done)
	}
}

// ackedAt returns when the result of id was acknowledged.
func (f *ackFeedbacker) ackedAt(id string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.acked[id]
	return t, ok
}

// pipeline is an explorer on 127.0.0.1 (fsync on) and a node Engine wired
// as provisiond wires it — the real explorer.Client as Poller (through a
// source.Poll with a durable cursor) and Feedbacker, the bbolt store of
// package cache (fsync on), the expiry source — but with primitives that
// return at once and no rate limit on the explorer or the outbox.
type pipeline struct {
	xs     *explorertest.Server
	nodeID string
	user   ed25519.PrivateKey
	users  *explorer.Client
	fb     *ackFeedbacker
	engine *engine.Engine
	stop   func()
}

func newPipeline(b *testing.B, want int) *pipeline {
	b.Helper()
	xs := explorertest.NewWithConfig(b, server.Config{Limits: server.Limits{Off: true}})
	nodeKey := explorertest.NewKey(b)
	client := xs.RegisterNode(b, nodeKey)
	store, err := cache.Open(filepath.Join(b.TempDir(), "provisiond.db"), cache.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close() })
	p := &pipeline{xs: xs, nodeID: explorertest.NodeID(nodeKey), user: explorertest.NewKey(b), fb: newAckFeedbacker(client, want)}
	p.users = xs.UserClient(p.user)
	p.engine = engine.New(engine.Options{
		NodeID: p.nodeID,
		Source: source.Combine(
			source.NewPoll(client, store, "explorer", source.PollOptions{}),
			source.NewDecommission(store, nil, source.DecommissionOptions{}),
		),
		Store:      store,
		Primitives: provisiontest.NewRecordingPrimitives(),
		Signer:     provision.KeySigner(nodeKey),
		Statser: provisiontest.NewStatser(provision.Capacity{
			Total: provision.Units{CRU: 64, MRU: 256, SRU: 1e9, HRU: 1e9},
		}),
		Feedbacker: p.fb,
		OutboxRate: rate.Inf,
	})
	return p
}

// run starts the Engine; stop ends it and fails b on an error.
func (p *pipeline) run(b *testing.B) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.engine.Run(ctx) }()
	p.stop = func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
	b.Cleanup(p.stop)
}

// reserve signs volume reservation i of the user and submits it.
func (p *pipeline) reserve(ctx context.Context, i int) (string, error) {
	r := explorertest.Volume(p.nodeID, 1)
	r.Reference = "bench-" + strconv.Itoa(i) // a distinct digest each
	r.Sign(p.user)
	return p.users.CreateReservation(ctx, r)
}

// submit creates n reservations with 8 concurrent users' requests.
func (p *pipeline) submit(b *testing.B, n int) []string {
	b.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				id, err := p.reserve(b.Context(), i)
				if err != nil {
					b.Error(err)
					return
				}
				ids[i] = id
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return ids
}

// wait waits until every result was acknowledged.
func (p *pipeline) wait(b *testing.B, within time.Duration) {
	b.Helper()
	select {
	case <-p.fb.done:
	case <-time.After(within):
		p.fb.mu.Lock()
		n := len(p.fb.acked)
		p.fb.mu.Unlock()
		b.Fatalf("%d of %d results acknowledged within %s", n, p.fb.want, within)
	}
}

// checkStored checks that the explorer holds an ok result of each id.
func (p *pipeline) checkStored(b *testing.B, ids ...string) {
	b.Helper()
	for _, id := range ids {
		r := p.xs.Reservation(b, id)
		if r.Result == nil || r.Result.State != provision.StateOk {
			b.Fatalf("the explorer holds no ok result of %s: %+v", id, r.Result)
		}
	}
}

// BenchmarkEndToEnd measures the whole path in one process: a user's
// signed reservation stored by the explorer, the node's long-poll, ingest
// and validation, the fsync'd bbolt state machine, an instant provisioner,
// the signed result through the outbox, and the explorer's verified,
// fsync'd acknowledgement. The burst case submits b.N reservations first
// and reports how many per second the node turns into acknowledged
// results; the paced case publishes at 500 per second and reports the
// latency from the moment each reservation was due to be submitted to the
// explorer's acknowledgement of its result.
func BenchmarkEndToEnd(b *testing.B) {
	b.Run("burst", func(b *testing.B) {
		p := newPipeline(b, b.N)
		ids := p.submit(b, b.N)
		b.ResetTimer()
		start := time.Now()
		p.run(b)
		p.wait(b, 10*time.Minute)
		elapsed := time.Since(start)
		b.StopTimer()
		p.checkStored(b, ids[0], ids[len(ids)-1])
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "reservations/s")
	})
	b.Run("paced-500", func(b *testing.B) { benchPaced(b, 500, 5*time.Second) })
}

// benchPaced publishes rate reservations per second for span, b.N times
// over, through 16 concurrent submitters, and reports the p50 and p99 of
// due-to-acknowledged latency and the rate at which results came back.
// Latency counts from when a reservation was due, not from when a
// submitter got to it, so a backlog shows in the figures.
func benchPaced(b *testing.B, perSecond int, span time.Duration) {
	n := b.N * perSecond * int(span/time.Second)
	interval := time.Second / time.Duration(perSecond)
	p := newPipeline(b, n)
	p.run(b)
	waitCaughtUp(b, p.engine)

	ctx := b.Context()
	ids := make([]string, n)
	due := make([]time.Time, n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				id, err := p.reserve(ctx, i)
				if err != nil {
					b.Error(err)
					continue
				}
				ids[i] = id
			}
		})
	}
	b.ResetTimer()
	start := time.Now()
	timer := time.NewTimer(0)
	for i := range n {
		due[i] = start.Add(time.Duration(i) * interval)
		timer.Reset(time.Until(due[i]))
		select {
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		case <-timer.C:
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	p.wait(b, 10*time.Minute)
	b.StopTimer()

	lat := make([]time.Duration, n)
	var last time.Time
	for i, id := range ids {
		at, ok := p.fb.ackedAt(id)
		if !ok {
			b.Fatalf("no acknowledgement of %s", id)
		}
		lat[i] = at.Sub(due[i])
		if at.After(last) {
			last = at
		}
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(lat[n/2]), "p50-ms")
	b.ReportMetric(ms(lat[min(n*99/100, n-1)]), "p99-ms")
	b.ReportMetric(float64(n)/last.Sub(start).Seconds(), "reservations/s")
	p.checkStored(b, ids[0], ids[n-1])
}

// waitCaughtUp waits until the Engine runs and has read everything the
// explorer held, polling its Status: the Engine offers no event for it.
func waitCaughtUp(b *testing.B, e *engine.Engine) {
	b.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for s := e.Status(); !s.Running || !s.CaughtUp; s = e.Status() {
		select {
		case <-tick.C:
		case <-deadline:
			b.Fatalf("engine not caught up within a minute: %+v", s)
		}
	}
}

// idleWindow is how long BenchmarkIdleDaemon measures:
// $PROVISIOND_BENCH_IDLE_WINDOW (a Go duration) or 60s.
func idleWindow(b *testing.B) time.Duration {
	b.Helper()
	v := os.Getenv("PROVISIOND_BENCH_IDLE_WINDOW")
	if v == "" {
		return time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("PROVISIOND_BENCH_IDLE_WINDOW=%q is not a positive duration", v)
	}
	return d
}

// idleRecords is how many networks BenchmarkIdleDaemon deploys.
const idleRecords = 1000

// BenchmarkIdleDaemon runs the real provisiond, built as `make build`
// builds it (static, -trimpath: harness.PlainBin), with its default poll
// wait and resync against a real explorerd, deploys 1,000 network
// reservations on it (a namespace and a bridge each), waits until the
// explorer holds every result, lets the daemon settle, and then reports
// its resident memory at the end of a window (60 s, or
// $PROVISIOND_BENCH_IDLE_WINDOW) and the CPU it used over the window as a
// share of one core. The RSS is VmRSS of /proc/PID/status, as ps and top
// show it: the anonymous part (heap, stacks, runtime) and the file-backed
// one, which is clean pages the kernel may drop under pressure and is
// further split into the executable's and the database's mmap. The daemon
// runs in a mount namespace with a private /run/netns, so that its orphan
// cleanup cannot touch other daemons' networks; its networks go with it
// when it stops. It runs once whatever b.N is.
func BenchmarkIdleDaemon(b *testing.B) {
	testutil.RequiresRoot(b)
	testutil.RequiresCommand(b, "unshare")
	window := idleWindow(b)
	// One user submits the 1,000 records as fast as it can: the explorer's
	// per-key rate limit (40/s) would make the setup wait, not measure.
	b.Setenv("EXPLORERD_KEY_RATE", "100000")
	b.Setenv("EXPLORERD_KEY_BURST", "100000")
	ex := harness.StartExplorer(b)
	node := harness.StartNodeWith(b, ex.URL(), harness.NodeOptions{
		Plain:        true,
		PrivateNetns: true,
		Args:         []string{"--poll-wait", "30s", "--resync", "5m"},
	})
	checkBuiltAsMake(b, harness.PlainBin(b, "provisiond"))
	nodeID := node.ID(b)
	user := explorertest.NewKey(b)
	userID := explorertest.UserID(user)
	uc := explorer.NewUserClient(ex.URL(), user, explorertest.ClientOptions())

	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < idleRecords; i += 8 {
				// Distinct names; /28 subnets of 10.250.0.0/16, distinct too.
				data, _ := json.Marshal(provision.Network{
					Name:    fmt.Sprintf("idle%d", i),
					IPRange: "10.250.0.0/16",
					Subnet:  fmt.Sprintf("10.250.%d.%d/28", i/16, i%16*16),
				})
				r := &provision.Reservation{NodeID: nodeID, Type: provision.NetworkReservation, Data: data,
					Created: time.Now().UTC().Truncate(time.Second), Duration: 24 * time.Hour}
				r.Sign(user)
				if _, err := uc.CreateReservation(b.Context(), r); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	waitDeployed(b, uc, userID, 10*time.Minute)
	b.Cleanup(func() { checkNoHostNetns(b, userID) })

	settle := min(window/2, 15*time.Second)
	pause(b, settle)
	pid := node.PID()
	checkExe(b, pid, harness.PlainBin(b, "provisiond"))
	b.ResetTimer()
	cpu0, wall0 := cpuTicks(b, pid), time.Now()
	pause(b, window)
	cpu1, wall1 := cpuTicks(b, pid), time.Now()
	mem := memMB(b, pid, "VmRSS", "RssAnon", "RssFile")
	exe, db := mappedMB(b, pid, harness.PlainBin(b, "provisiond")), mappedMB(b, pid, filepath.Join(node.Dir, "data", "provisiond.db"))
	b.StopTimer()
	cpuSeconds := float64(cpu1-cpu0) / clockTicks
	b.ReportMetric(mem["VmRSS"], "rss-MB")
	b.ReportMetric(mem["RssAnon"], "rss-anon-MB")
	b.ReportMetric(mem["RssFile"], "rss-file-MB")
	b.ReportMetric(exe, "rss-exe-MB")
	b.ReportMetric(db, "rss-db-MB")
	b.ReportMetric(100*cpuSeconds/wall1.Sub(wall0).Seconds(), "cpu-%")
	b.ReportMetric(wall1.Sub(wall0).Seconds(), "window-s")
	b.ReportMetric(idleRecords, "records")
}

// waitDeployed waits until the explorer holds an ok result of every one of
// the user's idleRecords reservations, asking once a second.
func waitDeployed(b *testing.B, uc *explorer.Client, userID string, within time.Duration) {
	b.Helper()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.After(within)
	for {
		rs, err := uc.ListReservations(b.Context(), userID)
		ok := 0
		if err == nil {
			for _, r := range rs {
				switch {
				case r.Result == nil:
				case r.Result.State == provision.StateOk:
					ok++
				default:
					b.Fatalf("reservation %s: %s %s", r.ID, r.Result.State, r.Result.Message)
				}
			}
		}
		if err == nil && ok == idleRecords {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			b.Fatalf("%d of %d networks deployed within %s (last error %v)", ok, idleRecords, within, err)
		}
	}
}

// pause waits d unless the benchmark's context ends first.
func pause(b *testing.B, d time.Duration) {
	b.Helper()
	select {
	case <-b.Context().Done():
		b.Fatal(b.Context().Err())
	case <-time.After(d):
	}
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTicks returns utime+stime of process pid (all its threads, live and
// exited) from /proc/PID/stat.
func cpuTicks(b *testing.B, pid int) uint64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// fields 14 and 15 are the 12th and 13th after it.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return utime + stime
}

// memMB returns the named kB fields of /proc/PID/status (VmRSS and its
// parts) in MB (10^6 bytes).
func memMB(b *testing.B, pid int, names ...string) map[string]float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	mb := make(map[string]float64, len(names))
	for _, l := range strings.Split(string(raw), "\n") {
		name, v, ok := strings.Cut(l, ":")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			b.Fatalf("/proc/%d/status %s %q: %v", pid, name, v, err)
		}
		mb[name] = kb * 1024 / 1e6
	}
	for _, n := range names {
		if _, ok := mb[n]; !ok {
			b.Fatalf("/proc/%d/status has no %s", pid, n)
		}
	}
	return mb
}

// checkBuiltAsMake fails b unless the binary at path was built static and
// with -trimpath, as `make build` builds it.
func checkBuiltAsMake(b *testing.B, path string) {
	b.Helper()
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	want := map[string]string{"CGO_ENABLED": "0", "-trimpath": "true"}
	for _, s := range info.Settings {
		if v, ok := want[s.Key]; ok && v == s.Value {
			delete(want, s.Key)
		}
	}
	if len(want) > 0 {
		b.Fatalf("%s was not built as `make build` builds it: want %v in its build settings %v", path, want, info.Settings)
	}
}

// checkExe fails b unless process pid runs the executable at path (and not,
// say, the unshare or shell that started it).
func checkExe(b *testing.B, pid int, path string) {
	b.Helper()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		b.Fatal(err)
	}
	if exe != realPath(b, path) {
		b.Fatalf("process %d runs %s, not %s", pid, exe, path)
	}
}

// mappedMB returns the resident part of every mapping of file path in
// process pid, from /proc/PID/smaps, in MB (10^6 bytes).
func mappedMB(b *testing.B, pid int, path string) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		b.Fatal(err)
	}
	path = realPath(b, path)
	var kb float64
	mine := false
	for l := range strings.Lines(string(raw)) {
		f := strings.Fields(l)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			// A mapping's header: range perms offset dev inode [path].
			mine = len(f) == 6 && f[5] == path
		case mine && len(f) == 3 && f[0] == "Rss:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				b.Fatalf("/proc/%d/smaps: %q", pid, l)
			}
			kb += v
		}
	}
	return kb * 1024 / 1e6
}

// realPath is path with its symbolic links resolved, as the kernel shows
// it in /proc.
func realPath(b *testing.B, path string) string {
	b.Helper()
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// checkNoHostNetns fails b when a network namespace of the user's networks
// shows in the host's /run/netns: the daemon made them in its own.
func checkNoHostNetns(b *testing.B, userID string) {
	b.Helper()
	for i := range idleRecords {
		name := network.Namespace(provision.NetworkID(userID, fmt.Sprintf("idle%d", i)))
		if _, err := os.Stat(filepath.Join(network.NamespaceDir, name)); err == nil {
			b.Errorf("network namespace %s is in the host's %s", name, network.NamespaceDir)
		}
	}
}
