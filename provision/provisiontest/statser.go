package provisiontest

import (
	"context"
	"fmt"
	"sync"

	"github.com/edgeprov/provisiond/provision"
)

// Statser is a provision.Statser with a settable capacity. Its units follow
// the table of DESIGN.md: a container takes CRU = cpu, MRU = memory/1024
// and SRU = disk_size/1024; a volume SRU or HRU = size; a network nothing.
type Statser struct {
	mu       sync.Mutex
	capacity provision.Capacity
	err      error
}

var _ provision.Statser = (*Statser)(nil)

// NewStatser returns a Statser reporting c.
func NewStatser(c provision.Capacity) *Statser {
	return &Statser{capacity: c}
}

// SetCapacity changes the reported capacity.
func (s *Statser) SetCapacity(c provision.Capacity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.capacity = c
}

// FailCapacity makes Capacity return err (nil: succeed again).
func (s *Statser) FailCapacity(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// Capacity returns the capacity set last.
func (s *Statser) Capacity(context.Context) (provision.Capacity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.capacity, s.err
}

// Units returns what r takes.
func (s *Statser) Units(r *provision.Reservation) (provision.Units, error) {
	w, err := r.Workload()
	if err != nil {
		return provision.Units{}, provision.Permanent(fmt.Errorf("pricing %s: %w", r.ID, err))
	}
	return UnitsOf(w), nil
}

// UnitsOf returns the units of a decoded workload (*provision.Network,
// *provision.Volume or *provision.Container).
func UnitsOf(w any) provision.Units {
	switch w := w.(type) {
	case *provision.Volume:
		if w.Type == provision.HDD {
			return provision.Units{HRU: float64(w.Size)}
		}
		return provision.Units{SRU: float64(w.Size)}
	case *provision.Container:
		return provision.Units{
			CRU: uint64(w.Capacity.CPU),
			MRU: float64(w.Capacity.Memory) / 1024,
			SRU: float64(w.Capacity.DiskSize) / 1024,
		}
	}
	return provision.Units{}
}
