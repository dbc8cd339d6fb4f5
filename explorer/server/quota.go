package server

import (
	"fmt"
	"strings"
	"time"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/stats"
)

// Quota is the per-user limit CreateReservationWithin enforces: how many
// active reservations a user may have (Limits.MaxActivePerUser) and the
// units their active reservations may hold together
// (Limits.MaxUnitsPerUser), each reservation priced as nodes price it
// (Units). The zero Quota limits nothing.
type Quota struct {
	// MaxActive is the most active reservations; ≤ 0: no limit.
	MaxActive int
	// MaxUnits is the most units; a zero unit is no limit.
	MaxUnits provision.Units
}

// PricesUnits reports whether q limits units, so that a store must sum
// the units of the user's active reservations.
func (q Quota) PricesUnits() bool { return q.MaxUnits != provision.Units{} }

// Check returns nil when user, with n active reservations holding used
// (summed only when PricesUnits), may add r; else an error wrapping
// ErrQuota that names the limits r would cross, what the user would then
// have and the limits.
func (q Quota) Check(user string, n int, used provision.Units, r *provision.Reservation) error {
	if q.MaxActive > 0 && n >= q.MaxActive {
		return fmt.Errorf("%w: user %s has %d active reservations, at most %d (delete one or wait until one expires)", ErrQuota, user, n, q.MaxActive)
	}
	return q.checkUnits(user, used, r)
}

// CheckUpdate is Check for next, the next version of cur: next's units
// replace cur's (when cur, not marked for deletion and not expired at now,
// is among the active reservations holding used) and the count does not
// change.
func (q Quota) CheckUpdate(user string, used provision.Units, now time.Time, cur, next *provision.Reservation) error {
	if !cur.ToDelete && cur.Expires().UnixMicro() >= now.UnixMicro() {
		used = used.Sub(Units(cur))
	}
	return q.checkUnits(user, used, next)
}

func (q Quota) checkUnits(user string, used provision.Units, r *provision.Reservation) error {
	if !q.PricesUnits() {
		return nil
	}
	over := provision.Quota{Units: q.MaxUnits}.Over(provision.Usage{Units: used}, Units(r), 0)
	if len(over) == 0 {
		return nil
	}
	return fmt.Errorf("%w: user %s would %s at this explorer (delete a reservation or wait until one expires)", ErrQuota, user, strings.Join(over, " and "))
}

// Units returns the units r holds while active, by the nodes' one units
// table (stats.Units): everything it needs is in the signed reservation.
// A reservation that table cannot price (an unknown type, malformed data)
// counts nothing here; its node answers it with a signed error result.
func Units(r *provision.Reservation) provision.Units {
	u, err := stats.Units(r)
	if err != nil {
		return provision.Units{}
	}
	return u
}
