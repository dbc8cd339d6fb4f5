package ui

import (
	"context"
	"errors"
	"time"

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
	StatusUp = "up"
	// StatusDown: the node's last request is older than DownAfter.
	StatusDown = "down"
	// StatusUnreported: the node is seen but has reported no capacity yet.
	StatusUnreported = "unreported"
)

// UnitFigures are one resource unit of a node (CRU in cores, the others in
// GiB).
type UnitFigures struct {
	// Total is measured on the node's hardware.
	Total float64 `json:"total"`
	// System is the node's system reserve, never given to workloads.
	System float64 `json:"system"`
	// Reserved is what the node's active workloads take.
	Reserved float64 `json:"reserved"`
	// Free is Total − System − Reserved, floored at zero.
	Free float64 `json:"free"`
}

// NodeUnits are a node's figures per unit.
type NodeUnits struct {
	// CRU are the cores.
	CRU UnitFigures `json:"cru"`
	// MRU is the memory in GiB.
	MRU UnitFigures `json:"mru"`
	// SRU is the SSD storage in GiB.
	SRU UnitFigures `json:"sru"`
	// HRU is the HDD storage in GiB.
	HRU UnitFigures `json:"hru"`
}

// Add returns the sum of u and o, unit by unit.
func (u NodeUnits) Add(o NodeUnits) NodeUnits {
	add := func(a, b UnitFigures) UnitFigures {
		return UnitFigures{Total: a.Total + b.Total, System: a.System + b.System, Reserved: a.Reserved + b.Reserved, Free: a.Free + b.Free}
	}
	return NodeUnits{CRU: add(u.CRU, o.CRU), MRU: add(u.MRU, o.MRU), SRU: add(u.SRU, o.SRU), HRU: add(u.HRU, o.HRU)}
}

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

// NodeSummary is one node as the fleet page shows it. The JSON names are
// those of GET /api/v1/nodes.
type NodeSummary struct {
	// NodeID is the node's base58 ID.
	NodeID string `json:"node_id"`
	// Status is StatusUp, StatusDown or StatusUnreported, as of AsOf.
	Status string `json:"status"`
	// AsOf is the explorer's time when it computed Status.
	AsOf time.Time `json:"as_of"`
	// LastSeen is the last time the node sent a request.
	LastSeen time.Time `json:"last_seen"`
	// Registered is when the node first registered.
	Registered time.Time `json:"registered"`
	// Version is the provisiond version the node reported (empty: unknown).
	Version string `json:"version"`
	// Units are the node's figures per unit; all zero until it reported.
	Units NodeUnits `json:"units"`
	// Workloads counts the node's active workloads per type (from its
	// latest stats; absent before any).
	Workloads map[provision.ReservationType]uint64 `json:"workloads,omitempty"`
	// StatsUpdated is when the node computed its latest stats.
	StatsUpdated *time.Time `json:"stats_updated,omitempty"`
	// Availability is what the explorer derived from the node's signed
	// heartbeats (absent before its first).
	Availability *Availability `json:"availability,omitempty"`
}

// Availability is a node's availability as GET /api/v1/nodes says it
// (explorer.NodeAvailability; the same JSON names).
type Availability struct {
	// Percent30d is the share of the last 30 days (or since the first
	// heartbeat) its heartbeats cover, in percent.
	Percent30d float64 `json:"percent_30d"`
	// Since is the start of the window measured.
	Since time.Time `json:"since"`
	// LastHeartbeat is when the node made its latest heartbeat.
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// IntervalSeconds is the interval its latest heartbeat announced.
	IntervalSeconds float64 `json:"interval_seconds"`
	// BootID is the boot id of its latest heartbeat.
	BootID string `json:"boot_id"`
	// Booted is when its current boot started.
	Booted time.Time `json:"booted"`
	// Reboots30d counts its reboots within the window.
	Reboots30d int `json:"reboots_30d"`
	// LastReboot is the boot time of its latest reboot seen.
	LastReboot *time.Time `json:"last_reboot,omitempty"`
	// DownSince is when it missed its third heartbeat interval.
	DownSince *time.Time `json:"down_since,omitempty"`
}

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
