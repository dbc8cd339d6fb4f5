package server

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/edgeprov/provisiond/explorer"
)

// Defaults of the node list.
const (
	// DefaultDownAfter is Config.DownAfter's default: three times the
	// longest long-poll hold (explorer.MaxWait), so a node is down only
	// after several missed polls.
	DefaultDownAfter = 3 * explorer.MaxWait
	// DefaultSeenFlush is Config.SeenFlush's default.
	DefaultSeenFlush = 15 * time.Second
)

// nodeStatus computes a node's status at now from when it was last seen.
func nodeStatus(rec *NodeRecord, lastSeen, now time.Time, downAfter time.Duration) string {
	switch {
	case now.Sub(lastSeen) > downAfter:
		return explorer.NodeDown
	case rec.Capacity == nil && rec.Stats == nil:
		return explorer.NodeUnreported
	}
	return explorer.NodeUp
}

// summary is what GET /api/v1/nodes says of rec at now, with av its
// availability record (nil: no heartbeat yet). A node that missed
// explorer.DownAfterIntervals heartbeat intervals is down whatever else
// it sends.
func (s *Server) summary(rec *NodeRecord, av *Availability, now time.Time) explorer.NodeSummary {
	seen := s.lastSeen(rec.NodeID, rec.LastSeen)
	u := rec.Units()
	fig := func(total, system, reserved, free float64) explorer.UnitFigures {
		return explorer.UnitFigures{Total: total, System: system, Reserved: reserved, Free: free}
	}
	sum := explorer.NodeSummary{
		NodeID:     rec.NodeID,
		Status:     nodeStatus(rec, seen, now, s.cfg.DownAfter),
		AsOf:       now,
		LastSeen:   seen,
		Registered: rec.Registered,
		Version:    rec.Version,
		Units: explorer.NodeUnitFigures{
			CRU: fig(float64(u.Total.CRU), float64(u.System.CRU), float64(u.Reserved.CRU), float64(u.Free.CRU)),
			MRU: fig(u.Total.MRU, u.System.MRU, u.Reserved.MRU, u.Free.MRU),
			SRU: fig(u.Total.SRU, u.System.SRU, u.Reserved.SRU, u.Free.SRU),
			HRU: fig(u.Total.HRU, u.System.HRU, u.Reserved.HRU, u.Free.HRU),
		},
	}
	if rec.Stats != nil {
		sum.Workloads = rec.Stats.Workloads
		at := rec.Stats.Updated
		sum.StatsUpdated = &at
	}
	if av != nil {
		sum.Availability = av.Summary(now)
		if sum.Availability.DownSince != nil {
			sum.Status = explorer.NodeDown
		}
	}
	return sum
}

// nodeQuery reads the query of GET /api/v1/nodes.
func nodeQuery(r *http.Request) (q NodeQuery, status string, err error) {
	v := r.URL.Query()
	unit := func(name string) (float64, error) {
		s := v.Get(name)
		if s == "" {
			return 0, nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, fmt.Errorf("%w: %s=%q is not a number of units ≥ 0", ErrBadRequest, name, s)
		}
		return f, nil
	}
	cru, err := unit("free_cru")
	if err != nil {
		return q, "", err
	}
	if cru != math.Trunc(cru) || cru > 1<<53 {
		return q, "", fmt.Errorf("%w: free_cru=%q is not a whole number of cores", ErrBadRequest, v.Get("free_cru"))
	}
	q.MinFree.CRU = uint64(cru)
	if q.MinFree.MRU, err = unit("free_mru"); err != nil {
		return q, "", err
	}
	if q.MinFree.SRU, err = unit("free_sru"); err != nil {
		return q, "", err
	}
	if q.MinFree.HRU, err = unit("free_hru"); err != nil {
		return q, "", err
	}
	q.Limit = explorer.NodesPageDefault
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > explorer.NodesPageMax {
			return q, "", fmt.Errorf("%w: limit=%q is not between 1 and %d", ErrBadRequest, s, explorer.NodesPageMax)
		}
		q.Limit = n
	}
	q.After = v.Get("after")
	if len(q.After) > 128 {
		return q, "", fmt.Errorf("%w: after is longer than a node ID", ErrBadRequest)
	}
	status = v.Get("status")
	switch status {
	case "", explorer.NodeUp, explorer.NodeDown, explorer.NodeUnreported:
	default:
		return q, "", fmt.Errorf("%w: status=%q: want %s, %s or %s", ErrBadRequest, status, explorer.NodeUp, explorer.NodeDown, explorer.NodeUnreported)
	}
	return q, status, nil
}

// listNodes serves GET /api/v1/nodes: a page of nodes with their units and
// a status computed here, filtered by free units (in the store's query)
// and status. For status=up the store keeps only the nodes it saw recently
// enough (allowing for the last-seen times not yet flushed to it).
func (s *Server) listNodes(w http.ResponseWriter, r *http.Request, _ *call) error {
	q, status, err := nodeQuery(r)
	if err != nil {
		return err
	}
	now := s.cfg.Now().UTC()
	if status == explorer.NodeUp || status == explorer.NodeUnreported {
		q.SeenSince = now.Add(-s.cfg.DownAfter - s.cfg.SeenFlush)
	}
	recs, err := s.db.Nodes(r.Context(), q)
	if err != nil {
		return err
	}
	reply := explorer.NodesReply{Nodes: []explorer.NodeSummary{}, AsOf: now, DownAfterSeconds: s.cfg.DownAfter.Seconds()}
	avs := s.availability(r.Context(), recs)
	for _, rec := range recs {
		sum := s.summary(rec, avs[rec.NodeID], now)
		if status == "" || sum.Status == status {
			reply.Nodes = append(reply.Nodes, sum)
		}
	}
	if len(recs) == q.Limit {
		reply.Next = recs[len(recs)-1].NodeID
	}
	writeJSON(w, http.StatusOK, reply)
	return nil
}

// seenLoop stores, every SeenFlush, when the nodes seen since the last
// flush were last seen, and once more when ctx ends.
func (s *Server) seenLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SeenFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flushSeen(context.Background())
			return
		case <-t.C:
			s.flushSeen(ctx)
		}
	}
}

// flushSeen stores the last-seen times gathered since the last flush; on
// failure they are kept for the next one.
func (s *Server) flushSeen(ctx context.Context) {
	s.seenMu.Lock()
	dirty := s.dirty
	s.dirty = map[string]time.Time{}
	s.seenMu.Unlock()
	if len(dirty) == 0 {
		return
	}
	if err := s.db.TouchNodes(ctx, dirty); err != nil {
		s.log.Warn().Err(err).Int("nodes", len(dirty)).Msg("storing when nodes were last seen failed")
		s.seenMu.Lock()
		for id, at := range dirty {
			if cur, ok := s.dirty[id]; !ok || at.After(cur) {
				s.dirty[id] = at
			}
		}
		s.seenMu.Unlock()
	}
}

// checkVersion refuses a reported version that is too long or not
// printable ASCII: it is shown on pages and terminals.
func checkVersion(v string) error {
	if len(v) > explorer.MaxVersionLength {
		return fmt.Errorf("%w: version longer than %d bytes", ErrBadRequest, explorer.MaxVersionLength)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e { // a space is printable: "v1.0.0 (abc1234)"
			return fmt.Errorf("%w: version %q holds a byte that is not printable ASCII", ErrBadRequest, v)
		}
	}
	return nil
}

// putCapacity stores the node's capacity and the version it reports.
func (s *Server) putCapacity(w http.ResponseWriter, r *http.Request, c *call) error {
	var report explorer.CapacityReport
	if err := decode(c.body, &report); err != nil {
		return err
	}
	if err := checkVersion(report.Version); err != nil {
		return err
	}
	capacity := report.Capacity
	now := s.cfg.Now().UTC()
	if err := s.db.UpdateNode(r.Context(), r.PathValue("node"), func(rec *NodeRecord) {
		rec.Capacity, rec.LastSeen, rec.Version = &capacity, now, report.Version
	}); err != nil {
		return fmt.Errorf("storing capacity: %w", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
