package explorer

import (
	"encoding/json"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// Headers of a signed request.
const (
	HeaderKey       = "X-Provisiond-Key"
	HeaderTimestamp = "X-Provisiond-Timestamp"
	HeaderNonce     = "X-Provisiond-Nonce"
	HeaderSignature = "X-Provisiond-Signature"
)

// Limits of the API.
const (
	// MaxSkew is how far a request's timestamp may lie from the server's
	// clock, in either direction (2 minutes).
	MaxSkew = 2 * time.Minute
	// MaxWait is the longest a server holds a long-poll (60 s); a larger
	// wait is capped.
	MaxWait = 60 * time.Second
	// PageLimit is the largest number of events one poll returns.
	PageLimit = 500
	// MaxBodySize is the largest request body a server reads (1 MiB),
	// except for a batch of results (MaxBatchBodySize).
	MaxBodySize = 1 << 20
	// MaxBatchResults is the most results one POST
	// /api/v1/nodes/{node}/results may carry (256).
	MaxBatchResults = 256
	// MaxBatchBodySize is the largest body of POST
	// /api/v1/nodes/{node}/results a server reads (4 MiB).
	MaxBatchBodySize = 4 << 20
	// MaxEventSize is the largest reservation JSON one event carries
	// (512 KiB): a server refuses to create a reservation whose stored JSON
	// is larger (data is at most 64 KiB, but re-encoding may escape each
	// of its bytes as \u00XX), and sends an older oversized event as a stub
	// holding only its id, which the node answers with an error result.
	MaxEventSize = 512 << 10
	// MaxPageSize is the largest body of an events reply (4 MiB): a server
	// stops adding events to a page before it would grow past it (one
	// event of MaxEventSize always fits), and a client reads no more. With
	// PageLimit events per page, pages of large reservations are shorter.
	MaxPageSize = 4 << 20
	// MaxReplySize is the largest body of any other reply a node reads
	// (1 MiB): a node, a batch of result statuses (MaxBatchResults of at
	// most a few hundred bytes each), a registration.
	MaxReplySize = 1 << 20
	// MaxStateSize is the largest full-state snapshot a node reads
	// (16 MiB): about 100,000 active reservations of ID, digest and
	// version.
	MaxStateSize = 16 << 20
	// MaxErrorSize is how much of a refusal's body a client reads (4 KiB):
	// the message is cut there.
	MaxErrorSize = 4 << 10
)

// Codes of ErrorReply.Code: what a client may act on without reading the
// message.
const (
	// CodeNotRegistered says the explorer does not know the node of a
	// node endpoint (status 403): the node registers again (POST
	// /api/v1/nodes) and retries.
	CodeNotRegistered = "not_registered"
)

// RegisterRequest is the body of POST /api/v1/nodes. The node's public key
// is implied by its ID; the request must be signed by that key.
type RegisterRequest struct {
	// NodeID is the node's base58 ID.
	NodeID string `json:"node_id"`
}

// WireEvent is one event as it travels: its sequence number and the raw
// reservation, which the client decodes one event at a time.
type WireEvent struct {
	// Seq is the event's sequence number for its node.
	Seq uint64 `json:"seq"`
	// Reservation is the reservation JSON (new, or with a signed delete).
	Reservation json.RawMessage `json:"reservation"`
	// Oversized, when set, is the size in bytes of a reservation too large
	// to relay (more than MaxEventSize): Reservation then holds only its
	// id, and the node answers it with an error result.
	Oversized int `json:"oversized,omitempty"`
}

// EventsReply is the body of GET /api/v1/nodes/{node}/events.
type EventsReply struct {
	// Events are the events after the asked cursor, in sequence order.
	Events []WireEvent `json:"events"`
	// Next is the sequence number of the last event returned, or the asked
	// cursor when there is none: what to ask from next.
	Next uint64 `json:"next"`
}

// ResultsRequest is the body of POST /api/v1/nodes/{node}/results: up to
// MaxBatchResults signed results of the node, in the order the node wants
// them stored.
type ResultsRequest struct {
	// Results are the node's signed results.
	Results []*provision.Result `json:"results"`
}

// ResultStatus is the explorer's answer about one result of a batch.
type ResultStatus struct {
	// ID is the result's reservation ID, as far as it could be read.
	ID string `json:"id"`
	// Code is the status PUT /api/v1/nodes/{node}/results/{id} would have
	// answered for this result alone, but 200 instead of 204 when the
	// explorer stored or already held it.
	Code int `json:"code"`
	// Error says why the result was refused; empty when Code is 2xx.
	Error string `json:"error,omitempty"`
}

// ResultsReply is the body answering POST /api/v1/nodes/{node}/results:
// one status per result of the request, in the same order.
type ResultsReply struct {
	// Results are the statuses, one per result sent.
	Results []ResultStatus `json:"results"`
}

// CreateReply is the body answering POST /api/v1/reservations.
type CreateReply struct {
	// ID is the ID the explorer assigned.
	ID string `json:"id"`
}

// ReservationsReply is the body of GET /api/v1/reservations: one page of
// a user's reservations.
type ReservationsReply struct {
	// Reservations are the user's reservations with their results, oldest
	// first (by created to the microsecond, then by ID).
	Reservations []*provision.Reservation `json:"reservations"`
	// Next is the cursor of the next page (?cursor=), empty on the last.
	Next string `json:"next,omitempty"`
}

// DeleteRequest is the body of POST /api/v1/reservations/{id}/delete.
type DeleteRequest struct {
	// ID is the reservation's ID (it must match the path).
	ID string `json:"id"`
	// DeleteSignature is the owner's hex signature over
	// provision.DeleteChallenge(id, digest).
	DeleteSignature string `json:"delete_signature"`
}

// NodeInfo is the body of GET /api/v1/nodes/{node}.
type NodeInfo struct {
	// NodeID is the node's base58 ID.
	NodeID string `json:"node_id"`
	// Registered is when the node first registered.
	Registered time.Time `json:"registered"`
	// LastSeen is the last time the node sent a request.
	LastSeen time.Time `json:"last_seen"`
	// Capacity is the node's last reported capacity, if any.
	Capacity *provision.Capacity `json:"capacity,omitempty"`
	// Stats are the node's last reported stats, if any.
	Stats *provision.Stats `json:"stats,omitempty"`
	// Events is the node's last event sequence number.
	Events uint64 `json:"events"`
	// Version is the provisiond version the node reported with its
	// capacity (absent: not reported).
	Version string `json:"version,omitempty"`
}

// ErrorReply is the body of every refusal.
type ErrorReply struct {
	// Error says what was wrong.
	Error string `json:"error"`
	// Code, when set, names a refusal a client acts on (CodeNotRegistered).
	Code string `json:"code,omitempty"`
}

// NodeState is the body of GET /api/v1/nodes/{node}/state: the full-state
// snapshot a node reconciles from when its cursor is below the retained
// events (410 Gone), and compares with what it holds (anti-entropy).
type NodeState struct {
	// NodeID is the node's base58 ID.
	NodeID string `json:"node_id"`
	// Seq is the node's last event sequence number the snapshot is as of:
	// poll from it after reconciling.
	Seq uint64 `json:"seq"`
	// Low is the low-water mark: the events up to and including Low were
	// pruned, and a poll from a cursor below Low is answered 410 Gone.
	Low uint64 `json:"low"`
	// Reservations are the node's active reservations (neither deleted by
	// their owner nor expired), ordered by ID.
	Reservations []StateEntry `json:"reservations"`
}

// StateEntry is one active reservation of a NodeState.
type StateEntry struct {
	// ID is the reservation's ID.
	ID string `json:"id"`
	// Digest is the reservation's digest (provision.Reservation.Digest).
	Digest string `json:"digest"`
	// Version is the reservation's version.
	Version uint32 `json:"version"`
}
