package provision

import (
	"fmt"
	"strings"
	"time"
)

// State is the durable state of a reservation on this node.
//
//	accepted → provisioning → deployed | error
//	deployed → deleting → deleted
//
// A state is written before the side effect it announces.
type State string

// The states of a reservation record.
const (
	Accepted     State = "accepted"
	Provisioning State = "provisioning"
	Deployed     State = "deployed"
	Failed       State = "error"
	Deleting     State = "deleting"
	Deleted      State = "deleted"
)

// States lists every state in lifecycle order.
var States = []State{Accepted, Provisioning, Deployed, Failed, Deleting, Deleted}

// transitions holds the allowed moves. provisioning → provisioning and
// deleting → deleting are retries; provisioning/deployed → deleting serves
// deletes and expiry, error → deleting lets a failed workload's leftovers be
// removed.
var transitions = map[State][]State{
	Accepted:     {Provisioning, Failed, Deleting, Deleted},
	Provisioning: {Provisioning, Deployed, Failed, Deleting},
	Deployed:     {Deployed, Deleting, Failed, Provisioning},
	Deleting:     {Deleting, Deleted},
	Failed:       {Deleting, Deleted},
	Deleted:      {},
}

// CanMove reports whether the state machine allows from → to.
func CanMove(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Active reports whether a reservation in this state holds capacity:
// provisioning, deployed and deleting do.
func (s State) Active() bool {
	return s == Provisioning || s == Deployed || s == Deleting
}

// Final reports whether nothing more happens to a reservation in this state.
func (s State) Final() bool {
	return s == Deleted || s == Failed
}

// Transition is one entry of a record's history.
type Transition struct {
	// State is the state entered.
	State State `json:"state"`
	// At is when it was entered.
	At time.Time `json:"at"`
	// Message says why (an error, "expired", "deleted by owner").
	Message string `json:"message,omitempty"`
}

// MaxHistory is how many transitions a record keeps; older ones are dropped.
const MaxHistory = 32

// Record is what the node keeps about a reservation.
type Record struct {
	// Reservation is the reservation as received (with a delete request
	// merged in when one arrived).
	Reservation *Reservation `json:"reservation"`
	// Digest is Reservation.Digest(), computed once at ingest.
	Digest string `json:"digest"`
	// State is the current state.
	State State `json:"state"`
	// Key is a name the record holds exclusively while live (a network's
	// NetworkID); empty for most types.
	Key string `json:"key,omitempty"`
	// Units is what the reservation takes from capacity while Active.
	Units Units `json:"units"`
	// Result is the last signed result.
	Result *Result `json:"result,omitempty"`
	// Attempts counts tries of the current operation; reset on each new state.
	Attempts int `json:"attempts"`
	// Failures counts consecutive failed inspections; reset on success.
	Failures int `json:"failures"`
	// History lists the last MaxHistory transitions.
	History []Transition `json:"history,omitempty"`
	// Updated is when the record last changed.
	Updated time.Time `json:"updated"`
	// Prior is the version an update in progress replaces (set while the
	// record is provisioning the new version, nil otherwise): the one to
	// return to when the new version cannot be applied.
	Prior *Prior `json:"prior,omitempty"`
	// FailedUpdate is the signed error result of the owner's last update
	// that was refused or could not be applied (and was rolled back): a
	// repeat of that version gets this answer again instead of another
	// try, and the owner's next version may name it as previous (the
	// explorer holds it). Nil when none, or once a later update applied.
	FailedUpdate *Result `json:"failed_update,omitempty"`
	// DeleteOf is the version an owner's delete named when it was not the
	// running one (the explorer holds a version refused or rolled back
	// here): the "deleted" result answers it. Nil otherwise.
	DeleteOf *VersionRef `json:"delete_of,omitempty"`
	// Restoring is set while the record provisions its version again after
	// a rolled-back update: that version's stored ok result still holds
	// and no new one is sent.
	Restoring bool `json:"restoring,omitempty"`
	// Refused is the explorer's last final refusal of one of the record's
	// results, which the outbox then dropped; nil when none was refused.
	Refused *ResultRefusal `json:"refused,omitempty"`
}

// ResultRefusal records that the explorer refused a result for good (a
// Refusal in the reply to a batch): the node's state and the explorer's
// then differ, and an operator must look.
type ResultRefusal struct {
	// State and Created identify the refused result.
	State   ResultState `json:"state"`
	Created time.Time   `json:"created"`
	// Reason is the refusal's label (Refusal.Reason).
	Reason string `json:"reason"`
	// Message is the explorer's answer, cut to MaxRefusalMessage bytes.
	Message string `json:"message"`
	// At is when the node learnt of it.
	At time.Time `json:"at"`
}

// MaxRefusalMessage bounds ResultRefusal.Message (1 KiB).
const MaxRefusalMessage = 1 << 10

// ID returns the reservation ID.
func (rec *Record) ID() string { return rec.Reservation.ID }

// Move sets a new state, resets Attempts on a change of state and appends
// to History. It does not check CanMove; the caller does.
func (rec *Record) Move(to State, at time.Time, message string) {
	if rec.State != to {
		rec.Attempts = 0
	}
	rec.State = to
	rec.Updated = at
	rec.History = append(rec.History, Transition{State: to, At: at, Message: Truncate(message, MaxMessageLength)})
	if n := len(rec.History); n > MaxHistory {
		rec.History = append(rec.History[:0:0], rec.History[n-MaxHistory:]...)
	}
}

// Units are resource units: CRU in cores, MRU, SRU and HRU in GiB of
// memory, SSD and HDD.
type Units struct {
	CRU uint64  `json:"cru"`
	MRU float64 `json:"mru"`
	SRU float64 `json:"sru"`
	HRU float64 `json:"hru"`
}

// Add returns u + o.
func (u Units) Add(o Units) Units {
	return Units{CRU: u.CRU + o.CRU, MRU: u.MRU + o.MRU, SRU: u.SRU + o.SRU, HRU: u.HRU + o.HRU}
}

// Sub returns u − o, each unit floored at zero.
func (u Units) Sub(o Units) Units {
	r := Units{MRU: max(u.MRU-o.MRU, 0), SRU: max(u.SRU-o.SRU, 0), HRU: max(u.HRU-o.HRU, 0)}
	if u.CRU > o.CRU {
		r.CRU = u.CRU - o.CRU
	}
	return r
}

// Short returns the names of the units in which u exceeds limit, in the
// order cru, mru, sru, hru; none when u fits.
func (u Units) Short(limit Units) []string {
	var s []string
	if u.CRU > limit.CRU {
		s = append(s, "cru")
	}
	if u.MRU > limit.MRU {
		s = append(s, "mru")
	}
	if u.SRU > limit.SRU {
		s = append(s, "sru")
	}
	if u.HRU > limit.HRU {
		s = append(s, "hru")
	}
	return s
}

// Capacity is what the node has: Total measured on the hardware and
// Reserved kept back for the system.
type Capacity struct {
	Total    Units `json:"total"`
	Reserved Units `json:"reserved"`
}

// Usable returns Total minus Reserved.
func (c Capacity) Usable() Units { return c.Total.Sub(c.Reserved) }

// Admit is the admission rule, the one place it is written: a reservation
// of want units fits beside used when want + used ≤ Usable in every unit.
// When it does not, the permanent error wraps ErrNoCapacity, names the
// short units and says so when want alone exceeds Usable (it can never
// fit).
func (c Capacity) Admit(used, want Units) error {
	usable := c.Usable()
	short := want.Add(used).Short(usable)
	if len(short) == 0 {
		return nil
	}
	refused := fmt.Errorf("%w: %s", ErrNoCapacity, strings.Join(short, ", "))
	if len(want.Short(usable)) > 0 {
		refused = fmt.Errorf("%w (more than the node's usable capacity)", refused)
	}
	return Permanent(refused)
}

// Stats is the node's report: used units (a pure function of the active
// set), capacity and the count of active workloads per type.
type Stats struct {
	// Used is the sum of Units over active records.
	Used Units `json:"used"`
	// Capacity is the node's capacity and system reserve.
	Capacity Capacity `json:"capacity"`
	// Workloads counts active records per type.
	Workloads map[ReservationType]uint64 `json:"workloads"`
	// Updated is when the figures were computed.
	Updated time.Time `json:"updated"`
}

// OutboxKind says what an outbox entry carries.
type OutboxKind string

// The outbox entry kinds.
const (
	OutboxResult OutboxKind = "result"
	OutboxStats  OutboxKind = "stats"
	// OutboxHeartbeat carries a signed Heartbeat (heartbeat.go).
	OutboxHeartbeat OutboxKind = "heartbeat"
)

// OutboxEntry is a message waiting for the explorer's acknowledgement.
type OutboxEntry struct {
	// Seq orders entries; assigned by the store on enqueue.
	Seq uint64 `json:"seq"`
	// Kind is result, stats or heartbeat.
	Kind OutboxKind `json:"kind"`
	// Result is set for OutboxResult.
	Result *Result `json:"result,omitempty"`
	// Stats is set for OutboxStats.
	Stats *Stats `json:"stats,omitempty"`
	// Heartbeat is set for OutboxHeartbeat.
	Heartbeat *Heartbeat `json:"heartbeat,omitempty"`
	// Created is when the entry was enqueued.
	Created time.Time `json:"created"`
}
