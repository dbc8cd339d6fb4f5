package ui

import (
	"context"
	"errors"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/provision"
)

// ErrNotFound is what a Source returns for an unknown node or reservation;
// the page answers 404.
var ErrNotFound = errors.New("ui: not found")

// Source is what the pages show, computed by the explorer: each method
// returns one page's view model, which the page renders and its JSON twin
// encodes as it is.
type Source interface {
	// Fleet returns the page of nodes after the node ID after.
	Fleet(ctx context.Context, after string) (*FleetPage, error)
	// Node returns a node's page, or ErrNotFound.
	Node(ctx context.Context, id string) (*NodePage, error)
	// Reservation returns a reservation's page, or ErrNotFound.
	Reservation(ctx context.Context, id string) (*ReservationPage, error)
}

// Node statuses (NodeSummary.Status), computed by the explorer.
const (
	// StatusUp: the node sent a request within DownAfter and reported its
	// capacity.
	StatusUp = explorer.NodeUp
	// StatusDown: the node's last request is older than DownAfter.
	StatusDown = explorer.NodeDown
	// StatusUnreported: the node is seen but has reported no capacity yet.
	StatusUnreported = explorer.NodeUnreported
)

// UnitFigures are one resource unit of a node: those of GET /api/v1/nodes.
type UnitFigures = explorer.UnitFigures

// NodeUnits are a node's figures per unit: those of GET /api/v1/nodes.
type NodeUnits = explorer.NodeUnitFigures

// FromUnits returns the figures of a node with total, system reserve and
// reserved units; free is what remains, each unit floored at zero.
func FromUnits(total, system, reserved provision.Units) NodeUnits {
	free := total.Sub(system).Sub(reserved)
	fig := func(t, s, r, f float64) UnitFigures { return UnitFigures{Total: t, System: s, Reserved: r, Free: f} }
	return NodeUnits{
		CRU: fig(float64(total.CRU), float64(system.CRU), float64(reserved.CRU), float64(free.CRU)),
		MRU: fig(total.MRU, system.MRU, reserved.MRU, free.MRU),
		SRU: fig(total.SRU, system.SRU, reserved.SRU, free.SRU),
		HRU: fig(total.HRU, system.HRU, reserved.HRU, free.HRU),
	}
}

// NodeSummary is one node as the fleet page shows it: what GET
// /api/v1/nodes says of it.
type NodeSummary = explorer.NodeSummary

// FleetPage is the page of the fleet, /ui/.
type FleetPage struct {
	// AsOf is the explorer's time when it computed the page.
	AsOf time.Time `json:"as_of"`
	// DownAfterSeconds is the status rule: a node not heard from for
	// longer is down.
	DownAfterSeconds float64 `json:"down_after_seconds"`
	// Nodes are the page's nodes, ordered by ID.
	Nodes []NodeSummary `json:"nodes"`
	// Totals are the sums of the page's nodes' units.
	Totals NodeUnits `json:"totals"`
	// Up, Down and Unreported count the page's nodes by status.
	Up         int `json:"up"`
	Down       int `json:"down"`
	Unreported int `json:"unreported"`
	// After is the node ID the page starts after (empty: the first page).
	After string `json:"after,omitempty"`
	// Next, when not empty, is the node ID the next page starts after.
	Next string `json:"next,omitempty"`
}

// Reservation states as the pages show them.
const (
	// StatePending: not yet delivered to the node.
	StatePending = "pending"
	// StateDelivered: the node has it; no result yet.
	StateDelivered = "delivered"
	// StateDeleting: the owner signed a delete the node has not answered.
	StateDeleting = "deleting"
)

// StateOf returns what the pages call r's state: its result's state, or
// pending, delivered or deleting before one.
func StateOf(r *provision.Reservation) string {
	switch {
	case r.Result != nil && (r.Result.State == provision.StateDeleted || !r.ToDelete):
		return string(r.Result.State)
	case r.ToDelete:
		return StateDeleting
	case r.Delivered != nil:
		return StateDelivered
	}
	return StatePending
}

// WorkloadCount is how many of a node's reservations of a type are in a
// state.
type WorkloadCount struct {
	// Type is the reservation type.
	Type provision.ReservationType `json:"type"`
	// State is the state (StateOf).
	State string `json:"state"`
	// Count is how many.
	Count int `json:"count"`
}

// ReservationRow is a reservation in a node's list.
type ReservationRow struct {
	// ID is the reservation's ID.
	ID string `json:"id"`
	// Type is its type.
	Type provision.ReservationType `json:"type"`
	// UserID is its owner.
	UserID string `json:"user_id"`
	// State is StateOf it.
	State string `json:"state"`
	// Created is when its owner signed it.
	Created time.Time `json:"created"`
	// Delivered is when the node had it (absent: not yet).
	Delivered *time.Time `json:"delivered_at,omitempty"`
	// ResultAt is when the node signed its latest result (absent: none).
	ResultAt *time.Time `json:"result_at,omitempty"`
}

// ResultPoint is one result on a node's timeline.
type ResultPoint struct {
	// ID is the reservation the result answers.
	ID string `json:"id"`
	// State is the result's state.
	State provision.ResultState `json:"state"`
	// At is when the node signed it.
	At time.Time `json:"at"`
}

// NodePage is the page of a node, /ui/nodes/{node}.
type NodePage struct {
	// AsOf is the explorer's time when it computed the page.
	AsOf time.Time `json:"as_of"`
	// Node is the node's summary.
	Node NodeSummary `json:"node"`
	// Workloads count the listed reservations by type and state.
	Workloads []WorkloadCount `json:"workloads"`
	// Reservations are the node's latest reservations, the last
	// submitted first (at most Limit).
	Reservations []ReservationRow `json:"reservations"`
	// Limit is the most reservations the page lists.
	Limit int `json:"limit"`
	// Results are the latest results of the listed reservations, oldest
	// first: the node's results over time.
	Results []ResultPoint `json:"results"`
}

// Step is one event of a reservation's history.
type Step struct {
	// At is when it happened (absent: the explorer does not know).
	At *time.Time `json:"at,omitempty"`
	// What says what happened.
	What string `json:"what"`
}

// ReservationPage is the page of a reservation, /ui/reservations/{id}.
type ReservationPage struct {
	// AsOf is the explorer's time when it computed the page.
	AsOf time.Time `json:"as_of"`
	// Reservation is the reservation with its latest result.
	Reservation *provision.Reservation `json:"reservation"`
	// State is StateOf it.
	State string `json:"state"`
	// Digest is the sha256 of its canonical bytes: what the result answers.
	Digest string `json:"digest"`
	// History are its steps in time order.
	History []Step `json:"history"`
	// Verified says whether the explorer verified the owner's signature,
	// the owner's delete signature when there is one, and the node's
	// result against the node's key, ID and digest.
	Verified bool `json:"verified"`
	// Problem says what did not verify.
	Problem string `json:"problem,omitempty"`
}
