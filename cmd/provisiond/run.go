package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/admin"
	"github.com/edgeprov/provisiond/cache"
	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/internal/backoff"
	"github.com/edgeprov/provisiond/internal/certs"
	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/internal/gc"
	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/internal/selfcheck"
	"github.com/edgeprov/provisiond/internal/source"
	"github.com/edgeprov/provisiond/internal/version"
	"github.com/edgeprov/provisiond/metrics"
	"github.com/edgeprov/provisiond/primitives"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/systemd"
)

// run is the daemon: it opens the store, wires the engine to the explorer
// and the primitives, serves the admin socket and /metrics, and tells
// systemd it is ready once recovery ran. It returns when ctx ends.
func run(ctx context.Context, cfg *config) error {
	// SIGHUP is caught first: uncaught, it would end the process. It is
	// served once the engine runs (reloadOnHangup).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log, err := newLogger(cfg.LogFormat, cfg.LogLevel, os.Stderr)
	if err != nil {
		return err
	}
	if cfg.Explorer == "" {
		return errors.New("run: --explorer (PROVISIOND_EXPLORER) is required: the explorer URL to take reservations from")
	}
	u, err := url.Parse(cfg.Explorer)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("run: --explorer %q is not an http(s) URL", cfg.Explorer)
	}
	if err := checkPortRange(cfg.PortMin, cfg.PortMax); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	if cfg.Uplink != "" {
		if _, err := net.InterfaceByName(cfg.Uplink); err != nil {
			return fmt.Errorf("run: --uplink %q: %w", cfg.Uplink, err)
		}
	}
	transport, err := certs.Transport(cfg.ExplorerCA)
	if err != nil {
		return fmt.Errorf("run: --explorer-ca: %w", err)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		log.Warn().Str("explorer", cfg.Explorer).Msg("the explorer is reached over plain http: requests are signed but not private; use https (--explorer-ca for an operator's CA)")
	}
	for _, dir := range []string{cfg.DataDir, cfg.SSDPath, cfg.HDDPath} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("run: creating %s: %w", dir, err)
		}
	}
	logMaxSize, err := parseSize(cfg.LogMaxSize)
	if err != nil {
		return fmt.Errorf("run: --container-log-max-size: %w", err)
	}
	if cfg.LogMaxFiles < 1 || cfg.PidsLimit < 1 {
		return fmt.Errorf("run: --container-log-max-files (%d) and --container-pids-limit (%d) must be at least 1", cfg.LogMaxFiles, cfg.PidsLimit)
	}
	if err := checkLocalImages(cfg, log); err != nil {
		return err
	}
	if err := checkHeartbeat(cfg); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	quotas, err := cfg.quotas()
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	var registryAuth *registry.Auth
	if cfg.RegistryAuth != "" {
		if registryAuth, err = registry.LoadAuth(cfg.RegistryAuth); err != nil {
			return fmt.Errorf("run: --registry-auth: %w", err)
		}
		log.Info().Str("file", cfg.RegistryAuth).Int("registries", registryAuth.Hosts()).Msg("registry credentials loaded")
	}
	key, err := identity.LoadOrCreate(cfg.identityPath())
	if err != nil {
		return fmt.Errorf("run: node identity: %w", err)
	}
	nodeID := identity.NodeID(key.Public().(ed25519.PublicKey))
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("run: finding our own binary (it runs the wireguard helpers): %w", err)
	}
	log = log.With().Str("node", nodeID).Logger()

	store, err := cache.Open(cfg.dbPath(), cache.Options{Log: log})
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer store.Close()
	adminLn, err := admin.Listen(cfg.Socket)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer adminLn.Close()
	var metricsLn net.Listener
	if cfg.MetricsListen != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return fmt.Errorf("run: metrics listener: %w", err)
		}
		defer metricsLn.Close()
	}

	checks := selfcheck.Run(ctx, checkOptions(cfg, "daemon"))
	logChecks(log, checks)

	client := explorer.NewClient(cfg.Explorer, key, explorer.ClientOptions{PollWait: cfg.PollWait, Timeout: cfg.ExplorerTimeout, Transport: transport, Logger: log})
	gated := newRegistered(client)
	node := newNode(cfg)
	prims := primitives.New(primitives.Options{
		DataDir:              cfg.DataDir,
		SSDPath:              cfg.SSDPath,
		HDDPath:              cfg.HDDPath,
		MaxImageSize:         cfg.MaxImageMiB << 20,
		LocalImages:          cfg.LocalImages,
		Uplink:               cfg.Uplink,
		PortMin:              cfg.PortMin,
		PortMax:              cfg.PortMax,
		WireGuardHelper:      []string{self, "wireguard"},
		OpenSealed:           func(sealed string) ([]byte, error) { return identity.Open(key, sealed) },
		ContainerPidsLimit:   cfg.PidsLimit,
		ContainerLogMaxSize:  logMaxSize,
		ContainerLogMaxFiles: cfg.LogMaxFiles,
		ContainerRunDir:      cfg.RunDir,
		ImageHosts:           cfg.ImageHosts,
		InsecureRegistries:   cfg.InsecureRegistries,
		RegistryMirrors:      cfg.RegistryMirrors,
		RegistryAuth:         registryAuth,
		Log:                  log.With().Str("component", "primitives").Logger(),
		Lookup: func(id string) (*provision.Reservation, error) {
			rec, err := store.Get(id)
			if err != nil {
				return nil, err
			}
			return rec.Reservation, nil
		},
		ContainerRestartBackoff:    cfg.RestartBackoff,
		ContainerRestartBackoffMax: cfg.RestartBackoffMax,
		ContainerBootID:            bootID(cfg.BootIDFile),
	})
	poll := source.NewPoll(gated, store, pollCursor, source.PollOptions{
		Log:        log,
		Held:       func() ([]provision.SnapshotEntry, error) { return heldRecords(store, time.Now()) },
		CheckEvery: antiEntropyEvery,
	})
	expiry := source.NewDecommission(store, nil, source.DecommissionOptions{Log: log})
	d := &daemon{store: store, started: time.Now(), nodeID: nodeID, cfg: cfg, checks: checks, client: client, log: log}
	opTimeout := cfg.OpTimeout
	if opTimeout <= 0 {
		opTimeout = engine.DefaultOpTimeout
	}
	d.progress = &progress{limit: opTimeout + stallGrace, idle: d.started}
	m := metrics.New(d)
	m.SelfCheck(checks)
	engine := engine.New(engine.Options{
		NodeID:            nodeID,
		Source:            source.Combine(poll, expiry),
		Store:             store,
		Primitives:        withFaults(prims, log),
		Signer:            provision.KeySigner(key),
		Statser:           node,
		Feedbacker:        gated,
		Hooks:             m,
		Workers:           cfg.Workers,
		OpTimeout:         cfg.OpTimeout,
		DependencyTimeout: cfg.DepTimeout,
		ResyncInterval:    cfg.Resync,
		Quotas:            quotas,
		Log:               log,
	})
	d.engine = engine
	d.gc = newCollector(cfg, store, prims, engine, log)
	log.Info().Str("version", version.String()).Str("explorer", cfg.Explorer).Str("data_dir", cfg.DataDir).Msg("starting")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	goWithErr := func(name string, fn func() error) {
		wg.Go(func() {
			if err := fn(); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		})
	}
	goWithErr("engine", func() error { return engine.Run(ctx) })
	goWithErr("admin socket", func() error {
		return admin.NewServer(&admin.Local{Store: store, StatusFunc: d.status, StatsFunc: d.stats}, log).Serve(ctx, adminLn)
	})
	if metricsLn != nil {
		log.Info().Str("addr", metricsLn.Addr().String()).Msg("serving metrics")
		goWithErr("metrics", func() error { return m.Serve(ctx, metricsLn) })
	}
	wg.Go(func() { register(ctx, gated, node, log) })
	wg.Go(func() { d.gc.Run(ctx) })
	wg.Go(func() { reloadOnHangup(ctx, hup, cfg, engine, registryAuth, log) })
	startLifecycle(ctx, &wg, cfg, key, nodeID, engine, client, store, prims, log)
	wg.Go(func() {
		if !waitRunning(ctx, engine) {
			return
		}
		log.Info().Msg("recovery done; ready")
		if err := systemd.Ready(); err != nil {
			log.Warn().Err(err).Msg("notifying systemd failed")
		}
		if err := systemd.Watchdog(ctx, d.healthy); err != nil {
			log.Warn().Err(err).Msg("feeding the systemd watchdog failed")
		}
	})
	<-ctx.Done()
	_ = systemd.Stopping()
	log.Info().Msg("stopping")
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// waitRunning waits until the engine finished recovery and runs; false
// when ctx ended first.
func waitRunning(ctx context.Context, e *engine.Engine) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !e.Status().Running {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// register announces the node and its capacity to the explorer, retrying
// with jittered backoff until it succeeds or ctx ends: an explorer outage
// at start must not keep the daemon from serving what it already holds.
// It registers again each time the explorer says it does not know the
// node (an explorer whose database was replaced), until ctx ends.
func register(ctx context.Context, g *registered, node interface {
	Capacity(context.Context) (provision.Capacity, error)
}, log zerolog.Logger) {
	for registerOnce(ctx, g, node, log) {
		select {
		case <-ctx.Done():
			return
		case <-g.again:
			log.Warn().Msg("the explorer does not know this node; registering again")
		}
	}
}

// registerOnce registers the node and its capacity; false when ctx ended
// first.
func registerOnce(ctx context.Context, g *registered, node interface {
	Capacity(context.Context) (provision.Capacity, error)
}, log zerolog.Logger) bool {
	policy := backoff.Policy{Base: time.Second, Max: time.Minute}
	for attempt := 1; ; attempt++ {
		err := g.c.Register(ctx)
		if err == nil {
			var capacity provision.Capacity
			if capacity, err = node.Capacity(ctx); err == nil {
				err = g.c.ReportCapacity(ctx, capacity, version.String())
			}
		}
		if err == nil {
			g.ok.Store(true)
			log.Info().Msg("registered with the explorer")
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		delay := policy.Delay(attempt)
		log.Warn().Err(err).Dur("retry_in", delay).Msg("registering with the explorer failed")
		if !backoff.Sleep(ctx, delay) {
			return false
		}
	}
}

// errNotRegistered holds back polls and deliveries until the node is
// registered: the explorer would refuse them.
var errNotRegistered = provision.Temporary(errors.New("not yet registered with the explorer"))

// registered passes polls and deliveries to the explorer client once the
// node is registered, and answers errNotRegistered before. When the
// explorer answers that it does not know the node (explorer.ErrNotRegistered),
// it holds them back again and asks register to register anew.
type registered struct {
	c     *explorer.Client
	ok    atomic.Bool
	again chan struct{} // a registration is wanted; capacity 1
}

func newRegistered(c *explorer.Client) *registered {
	return &registered{c: c, again: make(chan struct{}, 1)}
}

// check looks at the outcome of a call: a not-registered refusal clears
// ok and wakes register. It returns err.
func (g *registered) check(err error) error {
	if errors.Is(err, explorer.ErrNotRegistered) {
		g.ok.Store(false)
		select {
		case g.again <- struct{}{}:
		default:
		}
	}
	return err
}

var (
	_ provision.Poller          = (*registered)(nil)
	_ provision.Snapshotter     = (*registered)(nil)
	_ provision.Feedbacker      = (*registered)(nil)
	_ provision.BatchFeedbacker = (*registered)(nil)
)

func (g *registered) Poll(ctx context.Context, from uint64) ([]provision.Event, uint64, error) {
	if !g.ok.Load() {
		return nil, from, errNotRegistered
	}
	evs, next, err := g.c.Poll(ctx, from)
	return evs, next, g.check(err)
}

func (g *registered) Snapshot(ctx context.Context) (*provision.Snapshot, error) {
	if !g.ok.Load() {
		return nil, errNotRegistered
	}
	return g.c.Snapshot(ctx)
}

func (g *registered) Fetch(ctx context.Context, id string) (*provision.Reservation, error) {
	if !g.ok.Load() {
		return nil, errNotRegistered
	}
	return g.c.Fetch(ctx, id)
}

// antiEntropyEvery is how often the poll source compares the explorer's
// snapshot of the node with its records (source.PollOptions.CheckEvery).
const antiEntropyEvery = 10 * time.Minute

// heldRecords lists the reservations the node holds for the comparison
// with the explorer's snapshot: the records neither deleted, being
// deleted, marked for deletion nor expired at now (failed ones included:
// the explorer lists them as active too).
func heldRecords(store *cache.Store, now time.Time) ([]provision.SnapshotEntry, error) {
	var held []provision.SnapshotEntry
	err := store.Scan(func(rec *provision.Record) error {
		if r := rec.Reservation; !r.ToDelete && !r.Expired(now) {
			held = append(held, provision.SnapshotEntry{ID: r.ID, Digest: rec.Digest, Version: r.Version})
		}
		return nil
	}, provision.Accepted, provision.Provisioning, provision.Deployed, provision.Failed)
	return held, err
}

func (g *registered) Feedback(ctx context.Context, nodeID string, r *provision.Result) error {
	if !g.ok.Load() {
		return errNotRegistered
	}
	return g.check(g.c.Feedback(ctx, nodeID, r))
}

func (g *registered) FeedbackBatch(ctx context.Context, nodeID string, rs []*provision.Result) ([]error, error) {
	if !g.ok.Load() {
		return nil, errNotRegistered
	}
	errs, err := g.c.FeedbackBatch(ctx, nodeID, rs)
	return errs, g.check(err)
}

func (g *registered) UpdateStats(ctx context.Context, nodeID string, s *provision.Stats) error {
	if !g.ok.Load() {
		return errNotRegistered
	}
	return g.check(g.c.UpdateStats(ctx, nodeID, s))
}

// daemon is the running daemon's view for the admin socket and metrics.
type daemon struct {
	store     *cache.Store
	engine    *engine.Engine
	started   time.Time
	nodeID    string
	cfg       *config
	checks    *selfcheck.Report
	client    *explorer.Client
	log       zerolog.Logger
	progress  *progress
	gc        *gc.Collector
	unhealthy atomic.Bool
}

var _ metrics.Source = (*daemon)(nil)

func (d *daemon) status(context.Context) (*admin.Status, error) {
	s, err := storeStatus(d.store, d.nodeID)
	if err != nil {
		return nil, err
	}
	es := d.engine.Status()
	s.Running = es.Running
	s.Version = version.String()
	s.Started = d.started
	s.Explorer = d.cfg.Explorer
	s.CaughtUp = es.CaughtUp
	s.Queued = es.Queued + es.Waiting
	s.Busy = es.Busy
	s.LastPollError = es.LastPollError
	s.LastPollErrorAt = es.LastPollErrorAt
	s.Checks = d.checks
	if r, ok := d.gc.Last(); ok {
		s.Disk = diskUsage(r.Usage)
		s.Disk.LastSweep = r.At
		s.Disk.Removed = &admin.SweepCounts{Images: len(r.Images), Temporary: r.Temporary, Records: len(r.Records), Bytes: r.ImageBytes}
	}
	if sk, ok := d.client.ClockSkew(); ok {
		s.ClockSkew = clockSkew(sk)
	}
	return s, nil
}

// clockSkew returns what Status says of a skew: nil within
// admin.MaxClockSkew.
func clockSkew(sk explorer.ClockSkew) *admin.ClockSkew {
	if sk.Skew.Abs() <= admin.MaxClockSkew {
		return nil
	}
	way := "behind"
	if sk.Skew < 0 {
		way = "ahead of"
	}
	hint := fmt.Sprintf("the node's clock is %s %s the explorer's; ", sk.Skew.Abs().Round(time.Second), way)
	if sk.Skew.Abs() > explorer.MaxSkew {
		hint += fmt.Sprintf("beyond %s the explorer refuses every request of the node (401): ", explorer.MaxSkew)
	} else {
		hint += fmt.Sprintf("beyond %s the explorer will refuse every request of the node (401): ", explorer.MaxSkew)
	}
	hint += "synchronise it (timedatectl set-ntp true, or chrony), or the explorer's"
	return &admin.ClockSkew{Seconds: sk.Skew.Seconds(), MeasuredAt: sk.At, Hint: hint}
}

func (d *daemon) stats(context.Context) (*admin.Stats, error) {
	return admin.NewStats(d.engine.Status().Stats, d.engine.Quotas(), d.engine.Usage()), nil
}

// primitiveSet is what the engine is given: the primitives, which also
// inspect and list what they own (wrapped with a fault in test builds).
type primitiveSet interface {
	provision.Primitives
	provision.Inspector
	provision.Lister
}

// stallGrace is how long past OpTimeout an operation may run, or queued
// work may wait without any operation starting or ending, before the
// watchdog stops being fed.
const stallGrace = 10 * time.Second

// healthy is what the watchdog feeds on: see progress.check. It logs when
// the engine turns unhealthy and when it recovers.
func (d *daemon) healthy() error {
	err := d.progress.check(d.engine.Status(), time.Now())
	if was := d.unhealthy.Swap(err != nil); was != (err != nil) {
		if err != nil {
			d.log.Error().Err(err).Msg("engine makes no progress; no longer feeding the watchdog")
		} else {
			d.log.Info().Msg("engine makes progress again")
		}
	}
	return err
}

// progress tells a stuck engine from a busy or idle one. Every operation
// is bounded by OpTimeout, so a healthy worker pool starts or ends one at
// least that often while work is queued.
type progress struct {
	// limit is OpTimeout plus stallGrace.
	limit time.Duration
	mu    sync.Mutex
	// idle is the last time the engine was seen with nothing queued or
	// running (the daemon's start before that).
	idle time.Time
}

// check returns nil while the engine runs and is idle (nothing queued,
// no worker busy) or makes progress: no operation has run longer than
// limit, and one started or ended (or the engine was idle) within limit.
// Reservations that wait for a retry or a dependency only sleep and need
// no progress.
func (p *progress) check(st engine.Status, now time.Time) error {
	if !st.Running {
		return errors.New("engine not running")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if st.Queued == 0 && st.Busy == 0 {
		p.idle = now
		return nil
	}
	if !st.OldestOp.IsZero() && now.Sub(st.OldestOp) > p.limit {
		return fmt.Errorf("an operation has run for %s, past the operation timeout and its grace (%s); %d busy, %d queued",
			now.Sub(st.OldestOp).Round(time.Second), p.limit, st.Busy, st.Queued)
	}
	last := st.LastProgress
	if p.idle.After(last) {
		last = p.idle
	}
	if now.Sub(last) > p.limit {
		return fmt.Errorf("no operation started or ended for %s with %d queued and %d busy",
			now.Sub(last).Round(time.Second), st.Queued, st.Busy)
	}
	return nil
}

// Records counts records per state and type from the state index, without
// decoding records.
func (d *daemon) Records() (map[provision.State]map[provision.ReservationType]int, error) {
	out := map[provision.State]map[provision.ReservationType]int{}
	for _, st := range provision.States {
		counts := map[provision.ReservationType]int{}
		err := d.store.ScanUnits(func(_, _ string, typ provision.ReservationType, _ provision.Units) error {
			counts[typ]++
			return nil
		}, st)
		if err != nil {
			return nil, err
		}
		out[st] = counts
	}
	return out, nil
}

// OutboxDepth is the number of outbox entries.
func (d *daemon) OutboxDepth() (int, error) { return d.store.Depth() }

// Stats is the engine's latest figures.
func (d *daemon) Stats() provision.Stats { return d.engine.Status().Stats }

// checkLocalImages fails fast when --local-images names no directory, and
// warns when the directory holds the data directory: users could then
// probe the node's own state (its database, its identity) as images.
func checkLocalImages(cfg *config, log zerolog.Logger) error {
	if cfg.LocalImages == "" {
		return nil
	}
	st, err := os.Stat(cfg.LocalImages)
	if err != nil {
		return fmt.Errorf("run: --local-images: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("run: --local-images %s is not a directory", cfg.LocalImages)
	}
	dir, err1 := filepath.Abs(cfg.LocalImages)
	data, err2 := filepath.Abs(cfg.DataDir)
	if err1 == nil && err2 == nil {
		if rel, err := filepath.Rel(dir, data); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			log.Warn().Str("local_images", dir).Str("data_dir", data).Msg("local image directory holds the data directory")
		}
	}
	return nil
}

// loopback reports whether host (a URL's host name) is a loopback address
// or localhost.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
