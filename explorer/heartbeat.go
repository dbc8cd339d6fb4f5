package explorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// AvailabilityWindow is the window availability is measured over (30 days).
const AvailabilityWindow = 30 * 24 * time.Hour

// DownAfterIntervals is how many heartbeat intervals a node may miss
// before the explorer marks it down (3).
const DownAfterIntervals = 3

// NodeAvailability is what the explorer derived from a node's signed
// heartbeats (NodeSummary.Availability), computed at the answer's time.
type NodeAvailability struct {
	// Percent30d is the share of the window the node's heartbeats cover,
	// in percent: each heartbeat covers the interval before it (from its
	// boot at the earliest), and the time since the latest one while it is
	// shorter than an interval.
	Percent30d float64 `json:"percent_30d"`
	// Since is the start of the window measured: 30 days ago, or the
	// start of the first heartbeat's cover when later.
	Since time.Time `json:"since"`
	// LastHeartbeat is when the node made its latest heartbeat.
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// IntervalSeconds is the interval its latest heartbeat announced.
	IntervalSeconds float64 `json:"interval_seconds"`
	// BootID is the boot id of its latest heartbeat.
	BootID string `json:"boot_id"`
	// Booted is when the node's current boot started.
	Booted time.Time `json:"booted"`
	// Reboots30d counts the boot id changes within the window.
	Reboots30d int `json:"reboots_30d"`
	// LastReboot is the boot time of the latest boot id change (absent:
	// none seen).
	LastReboot *time.Time `json:"last_reboot,omitempty"`
	// DownSince, when set, is when the node missed its third interval:
	// the explorer marks it down from then on.
	DownSince *time.Time `json:"down_since,omitempty"`
}

// Heartbeat delivers a signed heartbeat (PUT /api/v1/nodes/{node}/heartbeat)
// for the outbox (provision.HeartbeatSender). The explorer's 400 judges
// the heartbeat itself (malformed, a bad signature): a permanent Refusal,
// dropped by the outbox. A 404, 405 or 501 says the explorer takes no
// heartbeats (a release before them, or a proxy that does not route them):
// also permanent, since the outbox delivers in order and a heartbeat
// retried for ever would hold back every result queued after it. Every
// other failure is temporary.
func (c *Client) Heartbeat(ctx context.Context, nodeID string, hb *provision.Heartbeat) error {
	body, err := json.Marshal(hb)
	if err != nil {
		return provision.Permanent(&provision.Refusal{Reason: "unencodable", Err: fmt.Errorf("encoding heartbeat: %w", err)})
	}
	err = c.doBody(ctx, http.MethodPut, "/api/v1/nodes/"+url.PathEscape(nodeID)+"/heartbeat", body, nil, c.opts.Timeout, MaxReplySize)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusBadRequest && !apiErr.Foreign {
		return provision.Permanent(&provision.Refusal{Reason: "malformed", Err: apiErr})
	}
	if errors.As(err, &apiErr) {
		switch apiErr.Status {
		case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
			return provision.Permanent(&provision.Refusal{Reason: "unsupported", Err: fmt.Errorf("the explorer takes no heartbeats: %w", apiErr)})
		}
	}
	return delivery(err)
}

var _ provision.HeartbeatSender = (*Client)(nil)
