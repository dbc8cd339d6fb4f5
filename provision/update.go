package provision

import (
	"fmt"
	"reflect"
)

// Prior is the version of a reservation that an update in progress
// replaces, kept in its Record until the new version is deployed, or
// reinstated if it cannot be.
type Prior struct {
	// Reservation is the replaced version as it was stored.
	Reservation *Reservation `json:"reservation"`
	// Digest is its digest.
	Digest string `json:"digest"`
	// Units are its units.
	Units Units `json:"units"`
	// Result is its last signed result.
	Result *Result `json:"result,omitempty"`
}

// VersionRef names one version of a reservation.
type VersionRef struct {
	// Version is its version number.
	Version uint32 `json:"version"`
	// Digest is its digest.
	Digest string `json:"digest"`
}

// IsUpdate reports whether r claims to replace an earlier version: it
// names the previous digest.
func (r *Reservation) IsUpdate() bool { return r.Previous != "" }

// CheckUpdate decides whether r, a valid reservation, may replace cur, the
// version a node holds under the same ID with digest curDigest: what
// CheckVersion checks, and per type what can change in place: a container
// keeps its network, IP, mounts, published ports and disk size (its image,
// entrypoint, env and capacity may change); a volume keeps its disk type
// and never shrinks; a network keeps its name, ranges, WireGuard key and
// port (its peers may change). A refusal wraps ErrBadUpdate and is
// permanent.
func CheckUpdate(cur *Reservation, curDigest string, r *Reservation) error {
	if err := checkUpdate(cur, curDigest, r); err != nil {
		return Permanent(fmt.Errorf("%w: %w", ErrBadUpdate, err))
	}
	return nil
}

// CheckVersion is the part of CheckUpdate that does not read the
// workloads: the same owner, node, type and creation time, exactly the
// next version, naming cur's digest, not a delete. The explorer applies
// it to every update it accepts (the node judges the workload). A refusal
// wraps ErrBadUpdate and is permanent.
func CheckVersion(cur *Reservation, curDigest string, r *Reservation) error {
	if err := checkVersion(cur, curDigest, r); err != nil {
		return Permanent(fmt.Errorf("%w: %w", ErrBadUpdate, err))
	}
	return nil
}

func checkUpdate(cur *Reservation, curDigest string, r *Reservation) error {
	if err := checkVersion(cur, curDigest, r); err != nil {
		return err
	}
	return checkWorkload(cur, r)
}

func checkVersion(cur *Reservation, curDigest string, r *Reservation) error {
	switch {
	case r.UserID != cur.UserID:
		return fmt.Errorf("only the owner may update")
	case r.NodeID != cur.NodeID:
		return fmt.Errorf("node_id changes")
	case r.Type != cur.Type:
		return fmt.Errorf("type changes from %s to %s", cur.Type, r.Type)
	case r.Version <= cur.Version:
		return fmt.Errorf("version %d is not newer than the current version %d", r.Version, cur.Version)
	case r.Version != cur.Version+1:
		return fmt.Errorf("version %d skips from the current version %d", r.Version, cur.Version)
	case !r.IsUpdate():
		return fmt.Errorf("version %d names no previous digest", r.Version)
	case r.Previous != curDigest:
		return fmt.Errorf("previous digest %s is not that of the current version %d (%s)", r.Previous, cur.Version, curDigest)
	case r.ToDelete:
		return fmt.Errorf("an update cannot be a delete")
	case !r.Created.Equal(cur.Created):
		return fmt.Errorf("created changes (an update keeps it; duration may change)")
	}
	return nil
}

func checkWorkload(cur, r *Reservation) error {
	ow, err := cur.Workload()
	if err != nil {
		return fmt.Errorf("current version: %w", err)
	}
	nw, err := r.Workload()
	if err != nil {
		return err
	}
	switch o := ow.(type) {
	case *Container:
		n := nw.(*Container)
		switch {
		case o.Network != n.Network:
			return fmt.Errorf("a container's network and IP cannot change")
		case !reflect.DeepEqual(o.Mounts, n.Mounts):
			return fmt.Errorf("a container's mounts cannot change")
		case !reflect.DeepEqual(o.Publish, n.Publish):
			return fmt.Errorf("a container's published ports cannot change")
		case o.Capacity.DiskSize != n.Capacity.DiskSize:
			return fmt.Errorf("a container's disk size cannot change")
		}
	case *Volume:
		n := nw.(*Volume)
		switch {
		case n.Type != o.Type:
			return fmt.Errorf("a volume's disk type cannot change")
		case n.Size < o.Size:
			return fmt.Errorf("a volume cannot shrink (from %d to %d GiB)", o.Size, n.Size)
		}
	case *Network:
		n := nw.(*Network)
		switch {
		case n.Name != o.Name || n.IPRange != o.IPRange || n.Subnet != o.Subnet:
			return fmt.Errorf("a network's name, ip_range and subnet cannot change")
		case (n.WireGuard == nil) != (o.WireGuard == nil):
			return fmt.Errorf("a network's WireGuard cannot be added or removed")
		case n.WireGuard != nil && (n.WireGuard.PrivateKey != o.WireGuard.PrivateKey || n.WireGuard.ListenPort != o.WireGuard.ListenPort):
			return fmt.Errorf("a network's WireGuard key and port cannot change")
		}
	}
	return nil
}
