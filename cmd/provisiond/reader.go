package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/edgeprov/provisiond/admin"
	"github.com/edgeprov/provisiond/cache"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/stats"
)

// pollCursor is the name under which the explorer poll source keeps its cursor.
const pollCursor = "explorer"

// errNoDatabase is openReader's answer on a node where no daemon ran yet.
var errNoDatabase = errors.New("no database")

// openReader returns what the read commands look through: the running
// daemon's admin socket when it answers, else the database opened
// read-only. Each failure is one clear sentence.
func openReader(ctx context.Context, cfg *config) (admin.Reader, func(), error) {
	c, err := admin.Dial(ctx, cfg.Socket)
	if err == nil {
		return c, func() {}, nil
	}
	if !errors.Is(err, admin.ErrNoDaemon) {
		return nil, nil, err
	}
	path := cfg.dbPath()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w at %s: provisiond has not run on this node yet (or --data-dir is wrong)", errNoDatabase, path)
	}
	st, err := cache.Open(path, cache.Options{ReadOnly: true, Timeout: time.Second})
	switch {
	case errors.Is(err, cache.ErrLocked):
		return nil, nil, fmt.Errorf("database %s is locked by a running provisiond whose admin socket %s does not answer (check --socket)", path, cfg.Socket)
	case errors.Is(err, cache.ErrCorrupt):
		return nil, nil, fmt.Errorf("database %s is corrupt: restore it from a `provisiond cache export` backup or move it aside", path)
	case err != nil:
		return nil, nil, err
	}
	return directReader(st, cfg), func() { st.Close() }, nil
}

// directReader reads a database no daemon holds.
func directReader(st *cache.Store, cfg *config) *admin.Local {
	nodeID := ""
	if key, err := identity.Load(cfg.identityPath()); err == nil {
		nodeID = identity.NodeID(key.Public().(ed25519.PublicKey))
	}
	return &admin.Local{
		Store: st,
		StatusFunc: func(context.Context) (*admin.Status, error) {
			s, err := storeStatus(st, nodeID)
			if err == nil {
				s.Disk = measureDisk(cfg)
			}
			return s, err
		},
		StatsFunc: func(ctx context.Context) (*admin.Stats, error) {
			quotas, err := cfg.quotas()
			if err != nil {
				return nil, err
			}
			capacity, err := newNode(cfg).Capacity(ctx)
			if err != nil {
				return nil, err
			}
			var active []*provision.Record
			usage := map[string]provision.Usage{}
			err = st.Scan(func(r *provision.Record) error {
				active = append(active, r)
				u := usage[r.Reservation.UserID]
				u.Units = u.Units.Add(r.Units)
				u.Workloads++
				usage[r.Reservation.UserID] = u
				return nil
			}, provision.Provisioning, provision.Deployed, provision.Deleting)
			if err != nil {
				return nil, err
			}
			return admin.NewStats(stats.Compute(active, capacity, time.Now()), quotas, usage), nil
		},
	}
}

// storeStatus is the part of the status the database holds.
func storeStatus(st *cache.Store, nodeID string) (*admin.Status, error) {
	counts, err := st.Counts()
	if err != nil {
		return nil, err
	}
	depth, err := st.Depth()
	if err != nil {
		return nil, err
	}
	cursor, err := st.Cursor(pollCursor)
	if err != nil {
		return nil, err
	}
	return &admin.Status{NodeID: nodeID, Cursor: cursor, OutboxDepth: depth, Records: counts, Database: st.Path()}, nil
}

func newNode(cfg *config) *stats.Node {
	return stats.NewNode(stats.NodeOptions{
		SSDPath: cfg.SSDPath,
		HDDPath: cfg.HDDPath,
		Reserve: provision.Units{CRU: cfg.ReserveCRU, MRU: cfg.ReserveMRU, SRU: cfg.ReserveSRU, HRU: cfg.ReserveHRU},
		// 0 keeps the default margin; a negative value keeps none.
		DiskMargin: int64(cfg.DiskMarginGiB * (1 << 30)),
	})
}
