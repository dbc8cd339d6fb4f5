package explorer

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// Limits of GET /api/v1/nodes.
const (
	// NodesPageDefault is how many nodes a page of GET /api/v1/nodes holds
	// when the request sets no limit (100).
	NodesPageDefault = 100
	// NodesPageMax is the most nodes one page holds (500; about 0.5 MiB of
	// JSON); a larger limit is refused.
	NodesPageMax = 500
	// MaxVersionLength is the longest version a node may report (64 bytes
	// of printable ASCII).
	MaxVersionLength = 64
)

// Node statuses, computed by the explorer from when it last heard from a
// node (NodeSummary.Status).
const (
	// NodeUp: the node sent a request within NodesReply.DownAfter of the
	// answer's time and has reported its capacity.
	NodeUp = "up"
	// NodeDown: the node's last request is older than DownAfter. A
	// polling node asks at least every MaxWait (60 s), so DownAfter
	// (3 minutes by default) is several missed polls.
	NodeDown = "down"
	// NodeUnreported: the node is seen but has not reported its capacity
	// yet (it registered a moment ago): it has nothing to offer yet.
	NodeUnreported = "unreported"
)

// CapacityReport is the body of PUT /api/v1/nodes/{node}/capacity: the
// node's capacity (the JSON of provision.Capacity) and the provisiond
// version it runs. An explorer older than the version field ignores it; a
// node older than it sends none.
type CapacityReport struct {
	provision.Capacity
	// Version is the node's provisiond version (at most MaxVersionLength
	// bytes of printable ASCII; empty: unknown).
	Version string `json:"version,omitempty"`
}

// UnitFigures are one resource unit of a node (CRU in cores, the others
// in GiB).
type UnitFigures struct {
	// Total is measured on the node's hardware.
	Total float64 `json:"total"`
	// System is the node's system reserve, never given to workloads.
	System float64 `json:"system"`
	// Reserved is what the node's active workloads take.
	Reserved float64 `json:"reserved"`
	// Free is Total − System − Reserved (floored at zero): what a new
	// workload may take.
	Free float64 `json:"free"`
}

// NodeUnitFigures are a node's figures per unit.
type NodeUnitFigures struct {
	// CRU are the cores.
	CRU UnitFigures `json:"cru"`
	// MRU is the memory, in GiB.
	MRU UnitFigures `json:"mru"`
	// SRU is the SSD storage, in GiB.
	SRU UnitFigures `json:"sru"`
	// HRU is the HDD storage, in GiB.
	HRU UnitFigures `json:"hru"`
}

// Add returns the sum of f and o, unit by unit.
func (f NodeUnitFigures) Add(o NodeUnitFigures) NodeUnitFigures {
	add := func(a, b UnitFigures) UnitFigures {
		return UnitFigures{Total: a.Total + b.Total, System: a.System + b.System, Reserved: a.Reserved + b.Reserved, Free: a.Free + b.Free}
	}
	return NodeUnitFigures{CRU: add(f.CRU, o.CRU), MRU: add(f.MRU, o.MRU), SRU: add(f.SRU, o.SRU), HRU: add(f.HRU, o.HRU)}
}

// Free returns the free figures as Units (CRU rounded down to whole cores).
func (f NodeUnitFigures) Free() provision.Units {
	return provision.Units{CRU: uint64(max(f.CRU.Free, 0)), MRU: f.MRU.Free, SRU: f.SRU.Free, HRU: f.HRU.Free}
}

// NodeSummary is one node of GET /api/v1/nodes.
type NodeSummary struct {
	// NodeID is the node's base58 ID.
	NodeID string `json:"node_id"`
	// Status is NodeUp, NodeDown or NodeUnreported, as of AsOf.
	Status string `json:"status"`
	// AsOf is the explorer's time when it computed Status.
	AsOf time.Time `json:"as_of"`
	// LastSeen is the last time the node sent a request.
	LastSeen time.Time `json:"last_seen"`
	// Registered is when the node first registered.
	Registered time.Time `json:"registered"`
	// Version is the provisiond version the node reported (empty: a node
	// too old to report it).
	Version string `json:"version"`
	// Units are the node's figures per unit; all zero until it reported
	// its capacity.
	Units NodeUnitFigures `json:"units"`
	// Workloads counts the node's active workloads per type (from its
	// latest stats; absent before any).
	Workloads map[provision.ReservationType]uint64 `json:"workloads,omitempty"`
	// StatsUpdated is when the node computed its latest stats (absent
	// before any).
	StatsUpdated *time.Time `json:"stats_updated,omitempty"`
	// Availability is what the explorer derived from the node's signed
	// heartbeats (absent before its first).
	Availability *NodeAvailability `json:"availability,omitempty"`
}

// NodesReply is the body of GET /api/v1/nodes.
type NodesReply struct {
	// Nodes are the page's nodes, ordered by ID.
	Nodes []NodeSummary `json:"nodes"`
	// AsOf is the explorer's time when it computed the statuses.
	AsOf time.Time `json:"as_of"`
	// DownAfterSeconds is the status rule: a node whose last request is
	// older than this many seconds at AsOf is down.
	DownAfterSeconds float64 `json:"down_after_seconds"`
	// Next, when not empty, is the cursor of the next page (pass it as
	// after); absent on the last page. A page may hold fewer nodes than
	// its limit while more follow.
	Next string `json:"next,omitempty"`
}

// NodeFilter selects nodes for Client.ListNodes.
type NodeFilter struct {
	// MinFree keeps the nodes with at least these free units.
	MinFree provision.Units
	// Status, when not empty, keeps the nodes of that status.
	Status string
	// After is the cursor of the page (NodesReply.Next); empty: the first.
	After string
	// Limit is the page size (0: the server's default, NodesPageDefault).
	Limit int
}

// Query returns f as the query string of GET /api/v1/nodes.
func (f NodeFilter) Query() url.Values {
	q := url.Values{}
	num := func(name string, v float64) {
		if v > 0 {
			q.Set(name, strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	num("free_cru", float64(f.MinFree.CRU))
	num("free_mru", f.MinFree.MRU)
	num("free_sru", f.MinFree.SRU)
	num("free_hru", f.MinFree.HRU)
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	if f.After != "" {
		q.Set("after", f.After)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// ReportCapacity reports the node's capacity and the provisiond version it
// runs (PUT /api/v1/nodes/{node}/capacity).
func (c *Client) ReportCapacity(ctx context.Context, capacity provision.Capacity, version string) error {
	return c.do(ctx, http.MethodPut, "/api/v1/nodes/"+url.PathEscape(c.node)+"/capacity",
		CapacityReport{Capacity: capacity, Version: version}, nil, c.opts.Timeout, MaxReplySize)
}

// ListNodes returns one page of the explorer's nodes that pass f.
func (c *Client) ListNodes(ctx context.Context, f NodeFilter) (*NodesReply, error) {
	path := "/api/v1/nodes"
	if q := f.Query().Encode(); q != "" {
		path += "?" + q
	}
	var reply NodesReply
	if err := c.do(ctx, http.MethodGet, path, nil, &reply, c.opts.Timeout, maxUserReplySize); err != nil {
		return nil, err
	}
	return &reply, nil
}
