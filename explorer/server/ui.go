package server

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/edgeprov/provisiond/explorer/ui"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// The view models of the explorer's pages (package ui), computed from the
// store: uiSource is the server's ui.Source.

const (
	// uiFleetPage is how many nodes one fleet page lists.
	uiFleetPage = 200
	// uiNodeReservations is how many of a node's reservations its page lists.
	uiNodeReservations = 200
)

// uiSource computes the pages' view models for s.
type uiSource struct{ s *Server }

var _ ui.Source = uiSource{}

// Fleet returns the page of nodes after after.
func (u uiSource) Fleet(ctx context.Context, after string) (*ui.FleetPage, error) {
	recs, err := u.s.db.Nodes(ctx, NodeQuery{After: after, Limit: uiFleetPage + 1})
	if err != nil {
		return nil, err
	}
	now := u.s.cfg.Now().UTC()
	p := &ui.FleetPage{AsOf: now, DownAfterSeconds: u.s.cfg.DownAfter.Seconds(), Nodes: []ui.NodeSummary{}, After: after}
	if len(recs) > uiFleetPage {
		recs = recs[:uiFleetPage]
		p.Next = recs[len(recs)-1].NodeID
	}
	avs := u.s.availability(ctx, recs)
	for _, rec := range recs {
		sum := u.s.summary(rec, avs[rec.NodeID], now)
		p.Nodes = append(p.Nodes, sum)
		p.Totals = p.Totals.Add(sum.Units)
		switch sum.Status {
		case ui.StatusUp:
			p.Up++
		case ui.StatusDown:
			p.Down++
		default:
			p.Unreported++
		}
	}
	return p, nil
}

// Node returns a node's page.
func (u uiSource) Node(ctx context.Context, id string) (*ui.NodePage, error) {
	rec, _, err := u.s.db.Node(ctx, id)
	if errors.Is(err, ErrUnknownNode) {
		return nil, fmt.Errorf("%w: no node %s", ui.ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	list, err := u.s.db.NodeReservations(ctx, id, uiNodeReservations)
	if err != nil {
		return nil, err
	}
	now := u.s.cfg.Now().UTC()
	p := &ui.NodePage{AsOf: now, Node: u.s.summary(rec, u.s.availability(ctx, []*NodeRecord{rec})[id], now), Limit: uiNodeReservations,
		Workloads: []ui.WorkloadCount{}, Reservations: []ui.ReservationRow{}, Results: []ui.ResultPoint{}}
	counts := map[ui.WorkloadCount]int{}
	for _, r := range list {
		row := ui.ReservationRow{ID: r.ID, Type: r.Type, UserID: r.UserID, State: ui.StateOf(r), Created: r.Created, Delivered: r.Delivered}
		if res := r.Result; res != nil {
			at := res.Created
			row.ResultAt = &at
			p.Results = append(p.Results, ui.ResultPoint{ID: r.ID, State: res.State, At: res.Created})
		}
		p.Reservations = append(p.Reservations, row)
		counts[ui.WorkloadCount{Type: r.Type, State: row.State}]++
	}
	for k, n := range counts {
		k.Count = n
		p.Workloads = append(p.Workloads, k)
	}
	sort.Slice(p.Workloads, func(i, j int) bool {
		a, b := p.Workloads[i], p.Workloads[j]
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		return a.State < b.State
	})
	sort.SliceStable(p.Results, func(i, j int) bool { return p.Results[i].At.Before(p.Results[j].At) })
	return p, nil
}

// Reservation returns a reservation's page; the explorer verifies what it
// shows as provctl does.
func (u uiSource) Reservation(ctx context.Context, id string) (*ui.ReservationPage, error) {
	r, err := u.s.db.Reservation(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: no reservation %s", ui.ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	p := &ui.ReservationPage{AsOf: u.s.cfg.Now().UTC(), Reservation: r, State: ui.StateOf(r), Digest: r.Digest()}
	created := r.Created
	p.History = append(p.History, ui.Step{At: &created, What: "created and signed by its owner"})
	if r.Delivered != nil {
		p.History = append(p.History, ui.Step{At: r.Delivered, What: "delivered to node " + r.NodeID})
	}
	if res := r.Result; res != nil {
		at := res.Created
		what := fmt.Sprintf("result %s signed by the node", res.State)
		if res.Message != "" {
			what += ": " + res.Message
		}
		p.History = append(p.History, ui.Step{At: &at, What: what})
	}
	if r.ToDelete {
		p.History = append(p.History, ui.Step{What: "early deletion signed by its owner"})
	}
	sort.SliceStable(p.History, func(i, j int) bool {
		a, b := p.History[i].At, p.History[j].At
		return a != nil && (b == nil || a.Before(*b))
	})
	if err := verifyShown(r); err != nil {
		p.Problem = err.Error()
	} else {
		p.Verified = true
	}
	return p, nil
}

// verifyShown checks what a page shows of r: the owner's signature, the
// owner's delete signature when a delete is marked, and the node's result
// (for r's ID, node and digest, signed by r's node).
func verifyShown(r *provision.Reservation) error {
	if err := r.Verify(); err != nil {
		return fmt.Errorf("owner signature: %w", err)
	}
	if r.ToDelete {
		if err := r.VerifyDelete(); err != nil {
			return fmt.Errorf("delete signature: %w", err)
		}
	}
	res := r.Result
	if res == nil {
		return nil
	}
	if res.ID != r.ID || res.NodeID != r.NodeID || res.Digest != r.Digest() {
		return fmt.Errorf("the result answers %s on %s (digest %s), not this reservation", res.ID, res.NodeID, res.Digest)
	}
	pub, err := identity.PublicKey(r.NodeID)
	if err != nil {
		return fmt.Errorf("node id: %w", err)
	}
	if err := res.Verify(pub); err != nil {
		return fmt.Errorf("result signature: %w", err)
	}
	return nil
}
