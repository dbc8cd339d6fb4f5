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

type tallyEntry struct {
	typ   provision.ReservationType
	units fixedUnits
}

// Tally is the set of reservations that hold capacity, keyed by
// reservation ID, with their units. Set and Remove are idempotent: setting
// an ID twice replaces its units, removing an absent ID does nothing, so a
// repeated event can never count twice (the predecessor's counters drifted
// and doubled). The sums are kept in fixed point (1 KiB resolution), which
// makes Total exact and O(1) and equal to the Total of a Tally built afresh
// from the same set. A Tally is not safe for concurrent use.
type Tally struct {
	set   map[string]tallyEntry
	total fixedUnits
	count map[provision.ReservationType]uint64
}

// New returns an empty Tally.
func New() *Tally {
	return &Tally{set: make(map[string]tallyEntry), count: make(map[provision.ReservationType]uint64)}
}

// Set records that id, of type typ, holds u, replacing what id held before.
func (t *Tally) Set(id string, typ provision.ReservationType, u provision.Units) {
	t.Remove(id)
	f := toFixed(u)
	t.set[id] = tallyEntry{typ: typ, units: f}
	t.total.cru += f.cru
	t.total.mru += f.mru
	t.total.sru += f.sru
	t.total.hru += f.hru
	t.count[typ]++
}

// Remove forgets id; it does nothing when id is not in the set.
func (t *Tally) Remove(id string) {
	e, ok := t.set[id]
	if !ok {
		return
	}
	delete(t.set, id)
	t.total.cru -= e.units.cru
	t.total.mru -= e.units.mru
	t.total.sru -= e.units.sru
	t.total.hru -= e.units.hru
	if t.count[e.typ]--; t.count[e.typ] == 0 {
		delete(t.count, e.typ)
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
func (t *Tally) Total() provision.Units {
	return provision.Units{
		CRU: t.total.cru,
		MRU: float64(t.total.mru) / tallyScale,
		SRU: float64(t.total.sru) / tallyScale,
		HRU: float64(t.total.hru) / tallyScale,
	}
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
