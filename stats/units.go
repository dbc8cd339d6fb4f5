package stats

import (
	"fmt"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// mib is the number of MiB in a GiB.
const mib = 1024

// Units returns the resource units reservation r takes while it is active:
// a container takes its cpu as CRU, memory/1024 as MRU and its root disk
// disk_size/1024 as SRU; a volume takes its size as SRU (ssd) or HRU (hdd);
// a network takes nothing. The Data is decoded and validated through
// r.Workload, so a malformed reservation is an error (an unknown type wraps
// provision.ErrUnknownType).
func Units(r *provision.Reservation) (provision.Units, error) {
	if r == nil {
		return provision.Units{}, fmt.Errorf("computing units: %w: no reservation", provision.ErrBadData)
	}
	w, err := r.Workload()
	if err != nil {
		return provision.Units{}, fmt.Errorf("computing units of %s reservation %q: %w", r.Type, r.ID, err)
	}
	if !r.Type.Known() {
		return provision.Units{}, fmt.Errorf("computing units of reservation %q: %w: no units for %q", r.ID, provision.ErrUnknownType, r.Type)
	}
	return UnitsOf(w), nil
}

// UnitsOf returns the units of a decoded workload: the table above, the
// one the daemon and the fakes share. A network, or anything else, takes
// nothing.
func UnitsOf(w any) provision.Units {
	switch w := w.(type) {
	case *provision.Volume:
		return volumeUnits(w)
	case *provision.Container:
		return containerUnits(w)
	default:
		return provision.Units{}
	}
}

func volumeUnits(v *provision.Volume) provision.Units {
	if v.Type == provision.HDD {
		return provision.Units{HRU: float64(v.Size)}
	}
	return provision.Units{SRU: float64(v.Size)}
}

func containerUnits(c *provision.Container) provision.Units {
	return provision.Units{
		CRU: uint64(c.Capacity.CPU),
		MRU: float64(c.Capacity.Memory) / mib,
		SRU: float64(c.Capacity.DiskSize) / mib,
	}
}

// Compute returns the node's stats at now: Used is the sum of rec.Units over
// the records whose state is Active (provisioning, deployed, deleting),
// Workloads counts those records per type (every known type is present,
// zero when none), and Capacity is passed through. It is a pure function of
// its arguments; records with a nil Reservation are counted in Used but
// under no type.
func Compute(recs []*provision.Record, capacity provision.Capacity, now time.Time) provision.Stats {
	s := provision.Stats{
		Capacity:  capacity,
		Workloads: make(map[provision.ReservationType]uint64, len(provision.Types)),
		Updated:   now,
	}
	for _, t := range provision.Types {
		s.Workloads[t] = 0
	}
	for _, rec := range recs {
		if rec == nil || !rec.State.Active() {
			continue
		}
		s.Used = s.Used.Add(rec.Units)
		if rec.Reservation != nil {
			s.Workloads[rec.Reservation.Type]++
		}
	}
	return s
}
