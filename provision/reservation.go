package provision

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Prefix is the label every runtime object created by provisiond carries in
// its name (namespaces, links, mounts, image files, runc containers), so that
// a restart, a repeat or a cleanup finds them and never touches anything else.
const Prefix = "prv-"

// MaxDataSize is the largest Data a reservation may carry (64 KiB).
const MaxDataSize = 64 << 10

// ReservationType is the kind of workload a reservation asks for.
type ReservationType string

// The reservation types this node knows.
const (
	NetworkReservation   ReservationType = "network"
	VolumeReservation    ReservationType = "volume"
	ContainerReservation ReservationType = "container"
)

// Types lists every known reservation type in a stable order.
var Types = []ReservationType{NetworkReservation, VolumeReservation, ContainerReservation}

// Known reports whether t is one of Types.
func (t ReservationType) Known() bool {
	for _, k := range Types {
		if t == k {
			return true
		}
	}
	return false
}

// Reservation is a workload a user signed for one node. The JSON names are
// those of the predecessor, plus delete_signature.
type Reservation struct {
	// ID is assigned by the explorer; it is not covered by the user's signature.
	ID string `json:"id"`
	// NodeID is the base58 node ID the reservation is meant for.
	NodeID string `json:"node_id"`
	// UserID is the owner's ed25519 public key, hex encoded.
	UserID string `json:"user_id"`
	// Type selects the primitive.
	Type ReservationType `json:"type"`
	// Data is the type's specification (Network, Volume or Container) as
	// JSON. Absent data stays absent when encoded (omitempty): `null` would
	// be other signed bytes than the empty field absent data signs.
	Data json.RawMessage `json:"data,omitempty"`
	// Created is when the user created the reservation.
	Created time.Time `json:"created"`
	// Duration is how long the workload lives after Created.
	Duration time.Duration `json:"duration"`
	// Signature is the owner's ed25519 signature over Challenge, hex encoded.
	Signature string `json:"signature"`
	// ToDelete asks for early deletion; honoured only with a valid DeleteSignature.
	ToDelete bool `json:"to_delete"`
	// DeleteSignature is the owner's signature over DeleteChallenge, hex encoded.
	DeleteSignature string `json:"delete_signature,omitempty"`
	// Reference is free text chosen by the user (signed).
	Reference string `json:"reference,omitempty"`
	// Result is the node's last signed result, as the explorer shows it.
	Result *Result `json:"result,omitempty"`
	// Version numbers the owner's versions of the reservation: an update
	// (see CheckUpdate) carries the version it replaces plus one, and
	// names that version's digest in Previous.
	Version uint32 `json:"version"`
	// Previous is the digest of the version an update replaces; empty for
	// a first version. It is signed (appended to the challenge only when
	// set, so first versions sign the bytes they always did).
	Previous string `json:"previous,omitempty"`
	// Delivered is when the explorer saw the node poll past the
	// reservation's event: the node had stored it. The explorer sets it in
	// its answers to users; it is not signed and never sent to a node.
	Delivered *time.Time `json:"delivered_at,omitempty"`
}

// Expires returns the moment the reservation ends: Created plus Duration.
func (r *Reservation) Expires() time.Time {
	return r.Created.Add(r.Duration)
}

// Expired reports whether now is after Created plus Duration.
func (r *Reservation) Expired(now time.Time) bool {
	return now.After(r.Expires())
}

// Digest returns the sha256 of the reservation's canonical challenge, hex
// encoded. It identifies the signed content independently of the ID the
// explorer assigned, so a replay under a new ID is recognised.
func (r *Reservation) Digest() string {
	sum := sha256.Sum256(r.Challenge())
	return hex.EncodeToString(sum[:])
}

// NetworkID returns the identifier of the network a user calls name. It is
// what a container names in network.network_id, and what the network
// primitive derives its namespace and bridge names from.
func NetworkID(user, name string) string {
	sum := sha256.Sum256(LengthPrefixed(networkDomain, user, name))
	return hex.EncodeToString(sum[:8])
}

// FilesystemName returns the name of the volume a reservation owns: the
// reservation ID under Prefix.
func FilesystemName(r *Reservation) string {
	return Prefix + r.ID
}

// ResultState is the outcome a node reports for a reservation.
type ResultState string

// The result states.
const (
	StateOk      ResultState = "ok"
	StateError   ResultState = "error"
	StateDeleted ResultState = "deleted"
)

// Result is the node's signed answer to a reservation.
type Result struct {
	// Type is the reservation's type.
	Type ReservationType `json:"type"`
	// ID is the reservation ID.
	ID string `json:"id"`
	// NodeID is the node that signed the result.
	NodeID string `json:"node_id"`
	// Digest is the reservation digest the result answers.
	Digest string `json:"digest"`
	// Version is the reservation version the result answers.
	Version uint32 `json:"version"`
	// Created is when the node produced the result.
	Created time.Time `json:"created"`
	// State is ok, error or deleted.
	State ResultState `json:"state"`
	// Message explains an error (empty when ok).
	Message string `json:"message"`
	// Data is what the primitive returned (for example a volume's path).
	Data json.RawMessage `json:"data,omitempty"`
	// Signature is the node's ed25519 signature over Bytes, hex encoded.
	Signature string `json:"signature"`
}
