// Package tally sums the units of the active workloads exactly, in fixed
// point, so that adding and removing in any order gives the total a fresh
// sum gives: the Engine's measure of the capacity in use for admission
// and stats.
package tally

import (
	"math"

	"github.com/edgeprov/provisiond/provision"
)

// tallyScale is the fixed-point resolution of a Tally: units are summed in
// 1/2^20 of a GiB (one KiB), so adding and removing are exact integer
// operations whose result does not depend on their order.
const tallyScale = 1 << 20

// fixedUnits is Units in fixed point (see tallyScale).
type fixedUnits struct {
	cru           uint64
	mru, sru, hru int64
}

func toFixed(u provision.Units) fixedUnits {
	return fixedUnits{
		cru: u.CRU,
		mru: int64(math.Round(u.MRU * tallyScale)),
		sru: int64(math.Round(u.SRU * tallyScale)),
		hru: int64(math.Round(u.HRU * tallyScale)),
	}
}

func (f *fixedUnits) add(o fixedUnits) {
	f.cru += o.cru
	f.mru += o.mru
	f.sru += o.sru
	f.hru += o.hru
}

func (f *fixedUnits) sub(o fixedUnits) {
	f.cru -= o.cru
	f.mru -= o.mru
	f.sru -= o.sru
	f.hru -= o.hru
}

func (f fixedUnits) units() provision.Units {
	return provision.Units{
		CRU: f.cru,
		MRU: float64(f.mru) / tallyScale,
		SRU: float64(f.sru) / tallyScale,
		HRU: float64(f.hru) / tallyScale,
	}
}

type tallyEntry struct {
	user  string
	typ   provision.ReservationType
	units fixedUnits
}

// userSum is what one user's reservations in the set hold.
type userSum struct {
	units fixedUnits
	count uint64
}

// Tally is the set of reservations that hold capacity, keyed by
// reservation ID, with their owners and units: the node's total and each
// user's usage (for quotas). Set and Remove are idempotent: setting
// an ID twice replaces its units, removing an absent ID does nothing, so a
// repeated event can never count twice (the predecessor's counters drifted
// and doubled). The sums are kept in fixed point (1 KiB resolution), which
// makes Total exact and O(1) and equal to the Total of a Tally built afresh
// from the same set. A Tally is not safe for concurrent use.
type Tally struct {
	set   map[string]tallyEntry
	total fixedUnits
	count map[provision.ReservationType]uint64
	users map[string]*userSum
}

// New returns an empty Tally.
func New() *Tally {
	return &Tally{
		set:   make(map[string]tallyEntry),
		count: make(map[provision.ReservationType]uint64),
		users: make(map[string]*userSum),
	}
}

// Set records that id, of type typ and owned by user, holds u, replacing
// what id held before.
func (t *Tally) Set(id, user string, typ provision.ReservationType, u provision.Units) {
	t.Remove(id)
	f := toFixed(u)
	t.set[id] = tallyEntry{user: user, typ: typ, units: f}
	t.total.add(f)
	t.count[typ]++
	us := t.users[user]
	if us == nil {
		us = &userSum{}
		t.users[user] = us
	}
	us.units.add(f)
	us.count++
}

// Remove forgets id; it does nothing when id is not in the set.
func (t *Tally) Remove(id string) {
	e, ok := t.set[id]
	if !ok {
		return
	}
	delete(t.set, id)
	t.total.sub(e.units)
	if t.count[e.typ]--; t.count[e.typ] == 0 {
		delete(t.count, e.typ)
	}
	us := t.users[e.user]
	us.units.sub(e.units)
	if us.count--; us.count == 0 {
		delete(t.users, e.user)
	}
}

// Has reports whether id is in the set.
func (t *Tally) Has(id string) bool {
	_, ok := t.set[id]
	return ok
}

// Len returns the number of reservations in the set.
func (t *Tally) Len() int { return len(t.set) }

// Total returns the sum of the units of the set.
func (t *Tally) Total() provision.Units { return t.total.units() }

// User returns what user's reservations in the set hold (zero when none).
func (t *Tally) User(user string) provision.Usage {
	us := t.users[user]
	if us == nil {
		return provision.Usage{}
	}
	return provision.Usage{Units: us.units.units(), Workloads: us.count}
}

// Users returns what each user with a reservation in the set holds (a
// fresh map).
func (t *Tally) Users() map[string]provision.Usage {
	m := make(map[string]provision.Usage, len(t.users))
	for user, us := range t.users {
		m[user] = provision.Usage{Units: us.units.units(), Workloads: us.count}
	}
	return m
}

// Get returns what the set counts for id: its owner and units, and
// whether id is in the set.
func (t *Tally) Get(id string) (user string, u provision.Units, ok bool) {
	e, ok := t.set[id]
	return e.user, e.units.units(), ok
}

// Workloads returns how many reservations of each type the set holds (a
// fresh map).
func (t *Tally) Workloads() map[provision.ReservationType]uint64 {
	m := make(map[provision.ReservationType]uint64, len(t.count))
	for typ, n := range t.count {
		m[typ] = n
	}
	return m
}
