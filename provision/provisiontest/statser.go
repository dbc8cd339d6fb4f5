package provisiontest

import (
	"context"
	"fmt"
	"sync"

	"github.com/edgeprov/provisiond/provision"
	units "github.com/edgeprov/provisiond/stats"
)

// Statser is a provision.Statser with a settable capacity. Its units are
// the daemon's, from the one table of stats.UnitsOf.
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
	return units.UnitsOf(w), nil
}
