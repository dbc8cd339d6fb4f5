package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/provision"
)

// Heartbeats and owner logs: the endpoints of FleetStore.

// ErrNotImplemented answers the endpoints of a store that is not a
// FleetStore (501).
var ErrNotImplemented = errors.New("server: not implemented by this store")

// LogsTopic is the notification topic of a node's pending log requests.
func LogsTopic(node string) string { return "logs:" + node }

// logsExpireEvery is how often the kept log requests are expired.
const logsExpireEvery = time.Minute

// fleetRoutes routes the heartbeat and log endpoints.
func (s *Server) fleetRoutes() {
	s.handle("PUT /api/v1/nodes/{node}/heartbeat", roleNode, s.putHeartbeat)
	s.handle("GET /api/v1/nodes/{node}/logs", roleNode, s.nodeLogRequests)
	s.handle("PUT /api/v1/nodes/{node}/logs/{request}", roleNode, s.putLogs)
	s.handle("POST /api/v1/reservations/{id}/logs", roleAny, s.requestLogs)
	s.handle("GET /api/v1/reservations/{id}/logs/{request}", roleAny, s.logStatus)
}

// fleetStore returns the store's FleetStore part, or ErrNotImplemented.
func (s *Server) fleetStore() (FleetStore, error) {
	if s.fleet == nil {
		return nil, fmt.Errorf("%w: heartbeats and logs", ErrNotImplemented)
	}
	return s.fleet, nil
}

// putHeartbeat stores a node's signed heartbeat. A heartbeat that is not
// the node's, does not verify or lies ahead of the clock is refused with
// 400 (a verdict on the heartbeat: the node drops it); one older than the
// availability window is acknowledged and ignored.
func (s *Server) putHeartbeat(w http.ResponseWriter, r *http.Request, c *call) error {
	fs, err := s.fleetStore()
	if err != nil {
		return err
	}
	node := r.PathValue("node")
	var hb provision.Heartbeat
	if err := decode(c.body, &hb); err != nil {
		return err
	}
	if hb.NodeID != node {
		return fmt.Errorf("%w: heartbeat of node %q sent by %s", ErrBadRequest, hb.NodeID, node)
	}
	if err := hb.Verify(c.signed.Key); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	now := s.cfg.Now().UTC()
	if hb.Created.After(now.Add(s.cfg.MaxSkew)) {
		return fmt.Errorf("%w: heartbeat created %s, ahead of the explorer's clock %s", ErrBadRequest,
			hb.Created.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	var reboot bool
	if err := fs.UpdateAvailability(r.Context(), node, func(a *Availability) error {
		reboot, _ = a.Add(&hb, now)
		return nil
	}); err != nil {
		return fmt.Errorf("storing heartbeat: %w", err)
	}
	if reboot {
		s.log.Info().Str("node", node).Str("boot_id", hb.BootID).Time("booted", hb.Booted).Msg("node rebooted")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// availability returns the availability records of recs' nodes; a store
// without them, or a failure, gives none (logged): the list still shows.
func (s *Server) availability(ctx context.Context, recs []*NodeRecord) map[string]*Availability {
	if s.fleet == nil || len(recs) == 0 {
		return nil
	}
	ids := make([]string, len(recs))
	for i, rec := range recs {
		ids[i] = rec.NodeID
	}
	m, err := s.fleet.Availabilities(ctx, ids)
	if err != nil {
		s.log.Warn().Err(err).Msg("reading availability failed")
		return nil
	}
	return m
}

// requestLogs takes an owner's signed request for a container's logs and
// keeps it for the node.
func (s *Server) requestLogs(w http.ResponseWriter, r *http.Request, c *call) error {
	fs, err := s.fleetStore()
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	var q explorer.LogRequest
	if err := decode(c.body, &q); err != nil {
		return err
	}
	if q.ID != id {
		return fmt.Errorf("%w: body id %q is not the path's %q", ErrBadRequest, q.ID, id)
	}
	rv, err := s.db.Reservation(r.Context(), id)
	if err != nil {
		return err
	}
	owner, err := userKeyOf(rv.UserID)
	if err != nil {
		return err
	}
	if !owner.Equal(c.signed.Key) {
		return fmt.Errorf("%w: only the owner %s may read the logs of reservation %s", ErrForbidden, rv.UserID, id)
	}
	if rv.Type != provision.ContainerReservation {
		return fmt.Errorf("%w: reservation %s is a %s, not a container: only containers have logs", ErrBadRequest, id, rv.Type)
	}
	if q.UserID != rv.UserID || q.NodeID != rv.NodeID {
		return fmt.Errorf("%w: the request names user %s on node %s, the reservation is %s's on %s", ErrBadRequest, q.UserID, q.NodeID, rv.UserID, rv.NodeID)
	}
	now := s.cfg.Now().UTC()
	if err := q.Verify(now); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	rec := &LogRecord{Name: q.Name(), Request: q, Expires: q.Created.Add(explorer.LogTTL).UTC()}
	if err := fs.PutLogRequest(r.Context(), rec, explorer.MaxLogRequestsPerUser, now); err != nil {
		if errors.Is(err, ErrTooMany) {
			return tooMany(time.Minute, "user %s has %d log requests kept already, at most %d for %s each", rv.UserID,
				explorer.MaxLogRequestsPerUser, explorer.MaxLogRequestsPerUser, explorer.LogTTL)
		}
		return err
	}
	s.hub.publish(LogsTopic(rv.NodeID))
	s.log.Info().Str("id", id).Str("node", rv.NodeID).Str("request", rec.Name).Int("tail", q.Tail).Msg("logs requested by owner")
	writeJSON(w, http.StatusAccepted, explorer.LogCreated{Request: rec.Name})
	return nil
}

// logStatus answers the owner with the state of a log request and its
// sealed answer.
func (s *Server) logStatus(w http.ResponseWriter, r *http.Request, c *call) error {
	fs, err := s.fleetStore()
	if err != nil {
		return err
	}
	id, name := r.PathValue("id"), r.PathValue("request")
	now := s.cfg.Now().UTC()
	rec, err := fs.LogRecord(r.Context(), name, now)
	if err != nil {
		return err
	}
	if rec.Request.ID != id {
		return fmt.Errorf("%w: no log request %s of reservation %s", ErrNotFound, name, id)
	}
	owner, err := userKeyOf(rec.Request.UserID)
	if err != nil {
		return err
	}
	if !owner.Equal(c.signed.Key) {
		return fmt.Errorf("%w: only the owner %s may read the logs of reservation %s", ErrForbidden, rec.Request.UserID, id)
	}
	st := explorer.LogStatus{Request: name, ID: id, NodeID: rec.Request.NodeID, State: explorer.LogPending,
		Created: rec.Request.Created, Answered: rec.Answered}
	if rec.Reply != nil {
		st.Sealed, st.Error = rec.Reply.Sealed, rec.Reply.Error
		st.State = explorer.LogAnswered
		if rec.Reply.Error != "" {
			st.State = explorer.LogRefused
		}
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// nodeLogRequests serves a node's long-poll of its pending log requests:
// at once when there are some, else held until one comes or wait
// passes. A node holds at most MaxPollsPerNode of them at once.
func (s *Server) nodeLogRequests(w http.ResponseWriter, r *http.Request, _ *call) error {
	fs, err := s.fleetStore()
	if err != nil {
		return err
	}
	node := r.PathValue("node")
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%w: wait=%q is not a duration like 30s", ErrBadRequest, v)
		}
		wait = min(d, s.cfg.MaxWait)
	}
	ctx := r.Context()
	recs, err := fs.PendingLogRequests(ctx, node, s.cfg.Now(), explorer.MaxLogRequestsPerPoll)
	if err != nil {
		return err
	}
	if len(recs) == 0 && wait > 0 {
		key := LogsTopic(node)
		if !s.lim.Off {
			if !s.polls.acquire(key, 1) {
				return tooMany(time.Second, "node %s holds %d log polls already", node, s.lim.MaxPollsPerNode)
			}
			defer s.polls.release(key, 1)
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + s.lim.WriteTimeout))
		t := time.NewTimer(wait)
		defer t.Stop()
		gone, err := s.waitFor(ctx, key, t, nil, func() (bool, error) {
			var err error
			recs, err = fs.PendingLogRequests(ctx, node, s.cfg.Now(), explorer.MaxLogRequestsPerPoll)
			return len(recs) > 0, err
		})
		if gone {
			return nil
		}
		if err != nil {
			return err
		}
	}
	reply := explorer.LogRequestsReply{Requests: make([]explorer.LogRequest, 0, len(recs))}
	for _, rec := range recs {
		reply.Requests = append(reply.Requests, rec.Request)
	}
	writeJSON(w, http.StatusOK, reply)
	return nil
}

// putLogs stores a node's answer to a log request: the tail sealed to the
// owner, or an error.
func (s *Server) putLogs(w http.ResponseWriter, r *http.Request, c *call) error {
	fs, err := s.fleetStore()
	if err != nil {
		return err
	}
	node, name := r.PathValue("node"), r.PathValue("request")
	var reply explorer.LogReply
	if err := decode(c.body, &reply); err != nil {
		return err
	}
	if err := explorer.CheckLogReply(&reply, name); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	reply.Error = strings.ToValidUTF8(reply.Error, "?")
	if err := fs.AnswerLogRequest(r.Context(), node, name, &reply, s.cfg.Now().UTC()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// logsExpireLoop deletes the expired log requests every minute.
func (s *Server) logsExpireLoop(ctx context.Context) {
	if s.fleet == nil {
		return
	}
	t := time.NewTicker(logsExpireEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.fleet.ExpireLogs(ctx, s.cfg.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("deleting expired log requests failed")
		}
	}
}
