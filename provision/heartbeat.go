package provision

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Heartbeats. A node states, signed, every heartbeat interval and at each
// start, that it runs, since which boot (the kernel's boot id and boot
// time), and how often it will say so again. The heartbeats go through the
// durable outbox like results (OutboxHeartbeat), so an explorer outage
// loses none: a late heartbeat still proves the node ran when it was made.
// The explorer derives the node's availability and reboots from them.

// heartbeatDomain separates heartbeat signatures from every other signed
// message.
const heartbeatDomain = "provisiond/heartbeat/v1"

// Bounds of a heartbeat.
const (
	// MinHeartbeatInterval is the shortest interval a heartbeat may
	// announce (1 s: tests use short ones).
	MinHeartbeatInterval = time.Second
	// MaxHeartbeatInterval is the longest interval a heartbeat may
	// announce (1 h).
	MaxHeartbeatInterval = time.Hour
	// MaxBootIDLength is the longest boot id a heartbeat carries (the
	// kernel's is a 36-character UUID).
	MaxBootIDLength = 64
)

// ErrBadHeartbeat is a heartbeat whose fields are out of range or whose
// signature does not verify.
var ErrBadHeartbeat = errors.New("provision: bad heartbeat")

// Heartbeat is a node's signed statement that it runs.
type Heartbeat struct {
	// NodeID is the node's base58 ID.
	NodeID string `json:"node_id"`
	// BootID identifies the node's current boot
	// (/proc/sys/kernel/random/boot_id): another one means the node
	// rebooted.
	BootID string `json:"boot_id"`
	// Booted is when the node's kernel booted.
	Booted time.Time `json:"booted"`
	// Created is when the node made the heartbeat.
	Created time.Time `json:"created"`
	// Interval is how long until the node's next heartbeat, in
	// nanoseconds.
	Interval time.Duration `json:"interval"`
	// Signature is the node's hex ed25519 signature over Bytes.
	Signature string `json:"signature"`
}

// Bytes returns the canonical bytes a node signs for a heartbeat: the
// domain tag "provisiond/heartbeat/v1", node_id, boot_id, booted and
// created (UTC, RFC 3339 nano) and interval (nanoseconds, decimal), each
// length-prefixed.
func (h *Heartbeat) Bytes() []byte {
	return LengthPrefixed(heartbeatDomain, h.NodeID, h.BootID, formatTime(h.Booted), formatTime(h.Created),
		strconv.FormatInt(int64(h.Interval), 10))
}

// Check refuses a heartbeat whose fields are out of range: no node ID, a
// boot id that is empty, longer than MaxBootIDLength or not printable
// ASCII, no created or booted time, booted after created, or an interval
// outside [MinHeartbeatInterval, MaxHeartbeatInterval].
func (h *Heartbeat) Check() error {
	switch {
	case h.NodeID == "":
		return fmt.Errorf("%w: no node_id", ErrBadHeartbeat)
	case h.BootID == "" || len(h.BootID) > MaxBootIDLength:
		return fmt.Errorf("%w: boot_id must be 1 to %d bytes", ErrBadHeartbeat, MaxBootIDLength)
	case h.Created.IsZero() || h.Booted.IsZero():
		return fmt.Errorf("%w: created and booted must be set", ErrBadHeartbeat)
	case h.Booted.After(h.Created):
		return fmt.Errorf("%w: booted %s after created %s", ErrBadHeartbeat, formatTime(h.Booted), formatTime(h.Created))
	case h.Interval < MinHeartbeatInterval || h.Interval > MaxHeartbeatInterval:
		return fmt.Errorf("%w: interval %s not within [%s, %s]", ErrBadHeartbeat, h.Interval, MinHeartbeatInterval, MaxHeartbeatInterval)
	}
	for i := 0; i < len(h.BootID); i++ {
		if c := h.BootID[i]; c <= 0x20 || c > 0x7e {
			return fmt.Errorf("%w: boot_id holds a byte that is not printable ASCII", ErrBadHeartbeat)
		}
	}
	return nil
}

// Sign checks the heartbeat and signs it with the node's signer.
func (h *Heartbeat) Sign(s Signer) error {
	if err := h.Check(); err != nil {
		return err
	}
	sig, err := s.Sign(h.Bytes())
	if err != nil {
		return fmt.Errorf("signing heartbeat: %w", err)
	}
	h.Signature = hex.EncodeToString(sig)
	return nil
}

// Verify checks the heartbeat's fields (Check) and its signature against
// the node's public key.
func (h *Heartbeat) Verify(nodeKey ed25519.PublicKey) error {
	if err := h.Check(); err != nil {
		return err
	}
	sig, err := hex.DecodeString(h.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is not %d hex-encoded bytes", ErrBadHeartbeat, ed25519.SignatureSize)
	}
	if len(nodeKey) != ed25519.PublicKeySize || !ed25519.Verify(nodeKey, h.Bytes(), sig) {
		return fmt.Errorf("%w: signature does not verify against node %s", ErrBadHeartbeat, h.NodeID)
	}
	return nil
}

// HeartbeatSender is the optional part of a Feedbacker that delivers
// heartbeats. Like Feedback, it returns a permanent error only when the
// explorer refused the heartbeat itself for good; the outbox drops it then
// and retries every other failure. A Feedbacker without it gets its
// heartbeat entries dropped as undeliverable.
type HeartbeatSender interface {
	Heartbeat(ctx context.Context, nodeID string, hb *Heartbeat) error
}
