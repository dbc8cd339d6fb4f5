package server

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/provision"
)

// This file is what users watch: the long-polls on a reservation or a
// user's list, woken by ReservationTopic and UserTopic, and the delivery
// marks that events polls leave.

// waitParam reads the wait= of a long-poll, capped at MaxWait, and gives
// the answer WriteTimeout past the hold's end to be written: a deadline
// that fell inside the hold would close the connection unanswered, and a
// client's transport sends a GET again on a new connection, with the same
// signature, which the replay set then refuses.
func (s *Server) waitParam(w http.ResponseWriter, r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w: wait=%q is not a duration like 30s", ErrBadRequest, v)
	}
	d = min(d, s.cfg.MaxWait)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + s.lim.WriteTimeout))
	return d, nil
}

// watchSlot takes one of key's MaxWatches long-polls on users' topics
// (and one of the server's MaxWatchesTotal: keys cost nothing to make), or
// fails with ErrTooManyWaits; release gives it back.
func (s *Server) watchSlot(key string) (release func(), err error) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watches[key] >= s.cfg.MaxWatches {
		return nil, fmt.Errorf("%w: %s already holds %d", ErrTooManyWaits, key, s.cfg.MaxWatches)
	}
	if s.watching >= s.cfg.MaxWatchesTotal {
		return nil, fmt.Errorf("%w: the explorer holds %d, its most", ErrTooManyWaits, s.cfg.MaxWatchesTotal)
	}
	s.watches[key]++
	s.watching++
	return func() {
		s.watchMu.Lock()
		defer s.watchMu.Unlock()
		s.watching--
		if s.watches[key]--; s.watches[key] <= 0 {
			delete(s.watches, key)
		}
	}, nil
}

// Watching returns how many users' long-polls (on a reservation or a
// list) are held right now.
func (s *Server) Watching() int {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	return s.watching
}

// hold is a user's long-poll: a watch slot of key, then waitFor until
// changed reports true, wait passes, the client leaves or
// the server shuts down; changed runs first at once and then after each
// wake-up of topic. It registers the waiter before each query, so a change
// committed between a query and the wait still wakes it. It returns
// changed's last error, or ctx's when the client left.
func (s *Server) hold(ctx context.Context, topic, key string, wait time.Duration, changed func() (bool, error)) error {
	ok, err := changed()
	if err != nil || ok || wait <= 0 {
		return err
	}
	release, err := s.watchSlot(key)
	if err != nil {
		return err
	}
	defer release()
	t := time.NewTimer(wait)
	defer t.Stop()
	var onWatch func()
	if s.cfg.OnWatch != nil {
		onWatch = func() { s.cfg.OnWatch(topic) }
	}
	gone, err := s.waitFor(ctx, topic, t, onWatch, changed)
	if gone {
		return ctx.Err()
	}
	return err
}

// getReservation serves a reservation with its result and delivery time.
// With after= (a ChangeToken) and wait=, it is a long-poll: it answers
// when the reservation's token differs from after, or when wait passed.
func (s *Server) getReservation(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	wait, err := s.waitParam(w, r)
	if err != nil {
		return err
	}
	after := r.URL.Query().Get("after")
	ctx := r.Context()
	var rv *provision.Reservation
	err = s.hold(ctx, ReservationTopic(id), c.signed.KeyID, wait, func() (bool, error) {
		var err error
		rv, err = s.db.Reservation(ctx, id)
		return err != nil || after == "" || explorer.ChangeToken(rv) != after, err
	})
	if ctx.Err() != nil {
		return nil // the client left
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rv)
	return nil
}

// listReservations serves one page of a user's reservations: ?user=
// (default the signer), ?limit= (default ListLimit, at most MaxListLimit),
// ?cursor= (the "next" of the page before). With after= (a ListToken of
// that page) and wait=, it is a long-poll like getReservation's, on the
// page asked.
func (s *Server) listReservations(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	user := q.Get("user")
	if user == "" {
		user = hex.EncodeToString(c.signed.Key)
	}
	if _, err := userKeyOf(user); err != nil {
		return err
	}
	p := Page{Limit: s.lim.ListLimit, MaxBytes: s.lim.MaxListBytes}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > s.lim.MaxListLimit {
			return fmt.Errorf("%w: limit=%q is not a number from 1 to %d", ErrBadRequest, v, s.lim.MaxListLimit)
		}
		p.Limit = n
	}
	var err error
	if p.After, err = ParseCursor(q.Get("cursor")); err != nil {
		return err
	}
	wait, err := s.waitParam(w, r)
	if err != nil {
		return err
	}
	after := q.Get("after")
	ctx := r.Context()
	var list []*provision.Reservation
	var next Cursor
	err = s.hold(ctx, UserTopic(user), c.signed.KeyID, wait, func() (bool, error) {
		var err error
		list, next, err = s.db.ReservationsPage(ctx, user, p)
		return err != nil || after == "" || explorer.ListToken(list) != after, err
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	if list == nil {
		list = []*provision.Reservation{}
	}
	writeJSON(w, http.StatusOK, explorer.ReservationsReply{Reservations: list, Next: next.String()})
	return nil
}

// markDelivered records that node polled from cursor from: it stored its
// events up to there. Each replica remembers the highest cursor it
// recorded per node and skips the write below it; MarkDelivered is
// idempotent anyway. The reservations it marks wake their watchers. A
// failure is logged: the next poll tries again.
func (s *Server) markDelivered(ctx context.Context, node string, from uint64) {
	if from == 0 {
		return
	}
	s.deliveredMu.Lock()
	done := s.deliveredTo[node] >= from
	s.deliveredMu.Unlock()
	if done {
		return
	}
	ds, err := s.db.MarkDelivered(ctx, node, from, s.cfg.Now())
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Str("node", node).Uint64("from", from).Msg("recording deliveries failed")
		}
		return
	}
	s.deliveredMu.Lock()
	s.deliveredTo[node] = max(s.deliveredTo[node], from)
	s.deliveredMu.Unlock()
	for _, d := range ds {
		s.publishChange(d.ID, d.UserID)
	}
}

// publishChange wakes the watchers of reservation id and of its owner's
// list on this replica (a Notifier store wakes the other replicas).
func (s *Server) publishChange(id, user string) {
	s.hub.publish(ReservationTopic(id))
	s.hub.publish(UserTopic(user))
}
