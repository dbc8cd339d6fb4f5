package main

import (
	"context"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/admin"
	"github.com/edgeprov/provisiond/cache"
	"github.com/edgeprov/provisiond/internal/engine"
	"github.com/edgeprov/provisiond/internal/gc"
	"github.com/edgeprov/provisiond/primitives"
)

// newCollector returns the daemon's garbage collector: images no live
// record references, the orphans of records that are not live (once the
// engine caught up: before, a record may still be on its way), and
// final records long expired, every cfg.GCInterval.
func newCollector(cfg *config, store *cache.Store, prims *primitives.Table, engine *engine.Engine, log zerolog.Logger) *gc.Collector {
	return gc.New(gc.Options{
		Store:  store,
		Images: prims,
		Orphans: func(ctx context.Context) error {
			if !engine.Status().CaughtUp {
				return nil
			}
			return engine.CleanupResources(ctx)
		},
		Paths:    diskPaths(cfg, prims),
		Interval: cfg.GCInterval,
		Log:      log,
	})
}

// diskPaths are where the node's data lies, for the disk usage.
func diskPaths(cfg *config, prims *primitives.Table) gc.Paths {
	images, bundles, runc, logs := prims.Containers().Dirs()
	return gc.Paths{
		Images:     images,
		Registry:   []string{filepath.Join(cfg.DataDir, "blobs"), filepath.Join(cfg.DataDir, "layers")},
		Containers: []string{bundles, runc},
		Logs:       logs,
		Volumes:    []string{cfg.SSDPath, cfg.HDDPath},
		Database:   cfg.dbPath(),
	}
}

// diskUsage is what Status says of u.
func diskUsage(u gc.Usage) *admin.DiskUsage {
	return &admin.DiskUsage{Images: u.Images, Containers: u.Containers, Volumes: u.Volumes, Logs: u.Logs, Database: u.Database, MeasuredAt: u.MeasuredAt}
}

// measureDisk measures the disk usage of a node no daemon runs on.
func measureDisk(cfg *config) *admin.DiskUsage {
	prims := primitives.New(primitives.Options{DataDir: cfg.DataDir, SSDPath: cfg.SSDPath, HDDPath: cfg.HDDPath})
	return diskUsage(gc.Measure(diskPaths(cfg, prims), time.Now()))
}
