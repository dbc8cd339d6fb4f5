// Package gc is provisiond's garbage collector. What is garbage is derived
// from the store at every sweep, never from counts kept in memory (which a
// restart loses, leaking what they counted):
//
//   - unpacked container images no live (non-final) record references, and
//     the temporary directories of unpacks and removals a kill -9
//     interrupted (container.Manager.SweepImages; leases keep an image a
//     Provision is about to use);
//   - runtime state (bundles, runc state, logs, namespaces, volume images)
//     of records that are no longer live: the engine's orphan cleanup
//     (engine.Engine.CleanupResources), once the engine caught up;
//   - final records whose reservation expired more than
//     provision.MaxClockSkew ago: a replay of them is refused as expired,
//     so their digest need not be kept.
//
// A Collector sweeps at its start and then every Interval, and measures
// the disk its node's data takes (Usage) at each sweep.
package gc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/provision"
)

// DefaultInterval is the default time between two sweeps.
const DefaultInterval = 10 * time.Minute

// Store is what the collector reads and purges; *cache.Store implements it.
type Store interface {
	// Scan calls fn for every record in one of states.
	Scan(fn func(*provision.Record) error, states ...provision.State) error
	// Purge removes the final records ids expired before cutoff.
	Purge(cutoff time.Time, ids ...string) ([]string, error)
}

// Images removes unpacked images; *primitives.Table implements it.
type Images interface {
	SweepImages(ctx context.Context, referenced func() (map[string]bool, error)) (container.SweepResult, error)
}

// Paths are where the node keeps what Usage measures.
type Paths struct {
	// Images is the directory of unpacked images.
	Images string
	// Registry are the directories of registry images (blobs, layers),
	// counted with Images.
	Registry []string
	// Containers are the directories of container state: bundles (their
	// upper directories) and runc's state.
	Containers []string
	// Logs is the directory of container logs.
	Logs string
	// Volumes are the directories of volume images ("prv-*.img").
	Volumes []string
	// Database is the database file.
	Database string
}

// Usage is the disk allocated to each kind of data, in bytes.
type Usage struct {
	Images     int64     `json:"images_bytes"`
	Containers int64     `json:"containers_bytes"`
	Volumes    int64     `json:"volumes_bytes"`
	Logs       int64     `json:"logs_bytes"`
	Database   int64     `json:"database_bytes"`
	MeasuredAt time.Time `json:"measured_at"`
}

// Measure returns the disk allocated below p's paths at now (allocated
// blocks, not apparent sizes: volume images are sparse). Mounts below a
// path (volumes, containers' root filesystems) are not entered.
func Measure(p Paths, now time.Time) Usage {
	u := Usage{MeasuredAt: now}
	if p.Images != "" {
		u.Images = container.Allocated(p.Images)
	}
	for _, d := range p.Registry {
		u.Images += container.Allocated(d)
	}
	for _, d := range p.Containers {
		u.Containers += container.Allocated(d)
	}
	if p.Logs != "" {
		u.Logs = container.Allocated(p.Logs)
	}
	seen := map[string]bool{}
	for _, d := range p.Volumes {
		if seen[d] {
			continue
		}
		seen[d] = true
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), provision.Prefix) && strings.Contains(e.Name(), ".img") {
				u.Volumes += container.Allocated(filepath.Join(d, e.Name()))
			}
		}
	}
	if p.Database != "" {
		u.Database = container.Allocated(p.Database)
	}
	return u
}

// Options configures a Collector.
type Options struct {
	// Store is the node's store. Required.
	Store Store
	// Images removes unpacked images; nil removes none.
	Images Images
	// Orphans removes the runtime state of records that are not live; it
	// may answer nil without doing anything (the engine has not caught
	// up). nil: none is removed.
	Orphans func(ctx context.Context) error
	// Paths are measured at each sweep.
	Paths Paths
	// Interval is the time between sweeps. Default DefaultInterval.
	Interval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Log is the logger. Default zerolog.Nop().
	Log zerolog.Logger
}

// Report is what one sweep did.
type Report struct {
	// At is when the sweep started.
	At time.Time `json:"at"`
	// Images are the digests of the images removed.
	Images []string `json:"images,omitempty"`
	// Temporary counts the leftover temporary directories removed.
	Temporary int `json:"temporary"`
	// ImageBytes is what the removed images and directories allocated.
	ImageBytes int64 `json:"image_bytes"`
	// Records are the IDs of the final records purged.
	Records []string `json:"records,omitempty"`
	// Usage is the disk usage measured after the sweep.
	Usage Usage `json:"usage"`
}

// Collector sweeps the garbage of a node.
type Collector struct {
	opts Options
	log  zerolog.Logger

	mu   sync.Mutex
	last *Report
}

// New returns a Collector. It panics when opts.Store is nil.
func New(opts Options) *Collector {
	if opts.Store == nil {
		panic("gc: Options.Store is required")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Collector{opts: opts, log: opts.Log.With().Str("component", "gc").Logger()}
}

// Last returns the report of the last sweep; false before the first.
func (c *Collector) Last() (Report, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		return Report{}, false
	}
	return *c.last, true
}

// Run sweeps at once and then every Interval until ctx ends. A failed
// sweep is logged; the next one tries again.
func (c *Collector) Run(ctx context.Context) {
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		if _, err := c.Sweep(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("garbage collection failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep collects the garbage once (see the package doc) and measures the
// disk usage. Each part runs even when another failed; the error joins
// theirs.
func (c *Collector) Sweep(ctx context.Context) (Report, error) {
	r := Report{At: c.opts.Now()}
	var errs []error
	if c.opts.Images != nil {
		res, err := c.opts.Images.SweepImages(ctx, c.referenced)
		r.Images, r.Temporary, r.ImageBytes = res.Images, res.Temporary, res.Bytes
		if err != nil {
			errs = append(errs, fmt.Errorf("sweeping images: %w", err))
		}
	}
	if c.opts.Orphans != nil {
		if err := c.opts.Orphans(ctx); err != nil {
			errs = append(errs, fmt.Errorf("removing orphans: %w", err))
		}
	}
	purged, err := c.purge(r.At)
	r.Records = purged
	if err != nil {
		errs = append(errs, fmt.Errorf("purging records: %w", err))
	}
	r.Usage = Measure(c.opts.Paths, c.opts.Now())
	if len(r.Records) > 0 {
		c.log.Info().Int("records", len(r.Records)).Msg("expired final records purged")
	}
	c.mu.Lock()
	c.last = &r
	c.mu.Unlock()
	return r, errors.Join(errs...)
}

// referenced returns the image digests the live records' containers name,
// read from the store now.
func (c *Collector) referenced() (map[string]bool, error) {
	refs := map[string]bool{}
	err := c.opts.Store.Scan(func(rec *provision.Record) error {
		if rec.Reservation == nil || rec.Reservation.Type != provision.ContainerReservation {
			return nil
		}
		w, err := rec.Reservation.Workload()
		if err != nil {
			// A live record whose image cannot be told keeps every
			// image: never delete on a doubt.
			return fmt.Errorf("record %s: %w", rec.Reservation.ID, err)
		}
		if ct, ok := w.(*provision.Container); ok {
			refs[ct.ImageSHA256()] = true
		}
		return nil
	}, liveStates()...)
	return refs, err
}

// purge removes the final records expired before now minus the allowed
// clock skew.
func (c *Collector) purge(now time.Time) ([]string, error) {
	cutoff := now.Add(-provision.MaxClockSkew)
	var ids []string
	err := c.opts.Store.Scan(func(rec *provision.Record) error {
		if rec.Reservation != nil && rec.Reservation.Expires().Before(cutoff) {
			ids = append(ids, rec.Reservation.ID)
		}
		return nil
	}, finalStates()...)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	return c.opts.Store.Purge(cutoff, ids...)
}

func liveStates() []provision.State {
	var out []provision.State
	for _, s := range provision.States {
		if !s.Final() {
			out = append(out, s)
		}
	}
	return out
}

func finalStates() []provision.State {
	var out []provision.State
	for _, s := range provision.States {
		if s.Final() {
			out = append(out, s)
		}
	}
	return out
}
