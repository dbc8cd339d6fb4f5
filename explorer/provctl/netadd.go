package provctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// Adding members to a WireGuard network (`provctl network add`), and
// removing one (`provctl network remove`).
//
// The change is written first to a pending file beside the network's
// file (<key>.net-<name>.pending.json, mode 0600): the network as it will
// be, with the new members' private keys and the time the change started.
// Then every member is brought to it at the explorer, new members first:
//
//   - a new member whose reservation is not known yet is looked up among
//     the owner's reservations (a network reservation of this name on its
//     node, created since the change started, not deleted: the one an
//     earlier run created but could not record) and created if there is
//     none;
//   - every member with a reservation is read back from the explorer and,
//     when its peers are not the ones the new network gives it, replaced
//     by an owner-signed next version with those peers (its key, port,
//     duration and reference kept).
//
// A remove takes a member out the same way: the network without it is
// the pending change, every other member is brought to it, then the
// removed member's reservation is deleted (unless it is being deleted
// already).
//
// So a run that fails halfway (an explorer that refuses or is gone)
// leaves the pending file; the same command run again finds which members
// already have their new version (their peers at the explorer are the
// wanted ones) and does only the rest. The network's file is replaced
// only once the explorer accepted every member, and the pending file is
// then removed.

// wgChange is a change of a WireGuard network in progress (the pending
// file).
type wgChange struct {
	// Network is the network as it is once the change is done.
	Network wgNetwork `json:"network"`
	// Keys are the new members' private keys, by node (each is sealed to
	// its node in the member's reservation).
	Keys map[string]string `json:"new_member_keys"`
	// Started is when the change started: a reservation of a new member
	// created before it is not the change's.
	Started time.Time `json:"started"`
	// Removed is the member a `network remove` takes out; nil for an add.
	Removed *wgMember `json:"removed,omitempty"`
}

func pendingFile(c *cli.Context, name string) string {
	return c.String("key") + ".net-" + name + ".pending.json"
}

// loadNetwork reads the network file of network name.
func loadNetwork(c *cli.Context, name string) (*wgNetwork, error) {
	var n wgNetwork
	if err := readJSONFile(networkFile(c, name), &n); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w (was the network created with this key?)", err)
		}
		return nil, err
	}
	return &n, nil
}

// readJSONFile reads path into v; its errors wrap ErrNetworkFile.
func readJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNetworkFile, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNetworkFile, path, err)
	}
	return nil
}

// writeJSONFile writes v as indented JSON to path, mode 0600, replacing
// it at once (a temporary file renamed over it): a reader sees the old
// file or the new one, never a part.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename: nothing
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// hub returns the index of the network's hub, its first member with a
// public address; -1 when there is none.
func (n *wgNetwork) hub() int {
	return slices.IndexFunc(n.Members, func(m wgMember) bool { return m.PublicIP != "" })
}

// check checks the network as the owner describes it, before anything is
// signed: an IPv4 range; an access address that is one address of it;
// members on distinct nodes whose subnets lie inside the range and
// overlap neither each other nor the access address; at least one member
// with a public address (the hub).
func (n *wgNetwork) check() error {
	rng, err := netip.ParsePrefix(n.IPRange)
	if err != nil || !rng.Addr().Is4() || rng.Masked() != rng {
		return fmt.Errorf("%w: --ip-range %q is not an IPv4 CIDR without host bits", ErrUsage, n.IPRange)
	}
	access, err := netip.ParsePrefix(n.AccessAddress)
	if err != nil || !access.Addr().Is4() || access.Bits() != 32 || !rng.Contains(access.Addr()) {
		return fmt.Errorf("%w: --access %q is not an IPv4 /32 inside %s", ErrUsage, n.AccessAddress, n.IPRange)
	}
	seen := map[string]bool{}
	var subnets []netip.Prefix
	for _, m := range n.Members {
		if seen[m.Node] {
			return fmt.Errorf("%w: node %s is a member twice", ErrUsage, m.Node)
		}
		seen[m.Node] = true
		sub, err := netip.ParsePrefix(m.Subnet)
		switch {
		case err != nil || !sub.Addr().Is4() || sub.Masked() != sub:
			return fmt.Errorf("%w: member %s: subnet %q is not an IPv4 CIDR without host bits", ErrUsage, m.Node, m.Subnet)
		case sub.Bits() < rng.Bits() || !rng.Contains(sub.Addr()):
			return fmt.Errorf("%w: member %s: subnet %s is not inside %s", ErrUsage, m.Node, sub, rng)
		case sub.Overlaps(access):
			return fmt.Errorf("%w: member %s: subnet %s holds the access address %s", ErrUsage, m.Node, sub, access)
		}
		for i, o := range subnets {
			if sub.Overlaps(o) {
				return fmt.Errorf("%w: member %s: subnet %s overlaps %s of member %s", ErrUsage, m.Node, sub, o, n.Members[i].Node)
			}
		}
		subnets = append(subnets, sub)
	}
	if n.hub() < 0 {
		return fmt.Errorf("%w: no member has a public address: nobody could reach the others", ErrUsage)
	}
	return nil
}

// addMembers is `provctl network add`: see the comment at the top of the
// file.
func addMembers(ctx context.Context, s *session) error {
	c := s.c
	name := c.String("name")
	n, ch, err := loadNetworkChange(c, name)
	if err != nil {
		return err
	}
	if ch != nil && ch.Removed != nil {
		return fmt.Errorf("%w: an earlier `network remove --name %s --node %s` is unfinished: run it again to finish it", ErrUsage, name, ch.Removed.Node)
	}
	var want []wgMember
	for _, spec := range c.StringSlice("member") {
		m, err := parseMember(spec)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(n.Members, func(o wgMember) bool { return o.Node == m.Node }); i >= 0 {
			return fmt.Errorf("%w: node %s is a member of network %q already (subnet %s)", ErrUsage, m.Node, name, n.Members[i].Subnet)
		}
		want = append(want, m)
	}
	if ch != nil {
		if err := ch.sameAdd(n, want); err != nil {
			return err
		}
		fmt.Fprintf(c.App.ErrWriter, "finishing the add started at %s (%s)\n", ch.Started.Format(time.RFC3339), pendingFile(c, name))
	} else {
		ch = &wgChange{Network: *n, Keys: map[string]string{}, Started: time.Now().UTC()}
		ch.Network.Members = slices.Clone(n.Members)
		for _, m := range want {
			k, err := wgtypes.GeneratePrivateKey()
			if err != nil {
				return err
			}
			m.PublicKey, m.ListenPort = k.PublicKey().String(), c.Int("port")
			ch.Keys[m.Node] = k.String()
			ch.Network.Members = append(ch.Network.Members, m)
		}
		if err := ch.Network.check(); err != nil {
			return err
		}
		if ch.Network.hub() != n.hub() {
			return fmt.Errorf("%w: network %q has no hub (a member with a public address)", ErrNetworkFile, name)
		}
		if err := writeJSONFile(pendingFile(c, name), ch); err != nil {
			return fmt.Errorf("recording the change: %w", err)
		}
	}
	return s.finish(ctx, ch, nil)
}

// finish brings the explorer to the pending change ch (converge), runs
// last when it is set, and only then replaces the network's file with
// ch's network and removes the pending file.
func (s *session) finish(ctx context.Context, ch *wgChange, last func() error) error {
	c, name := s.c, ch.Network.Name
	pending := pendingFile(c, name)
	err := s.converge(ctx, ch)
	if err == nil && last != nil {
		err = last()
	}
	if err != nil {
		return fmt.Errorf("%w\n(nothing is lost: run the same command again to finish; %s holds the change)", err, pending)
	}
	if err := writeJSONFile(networkFile(c, name), ch.Network); err != nil {
		return fmt.Errorf("the explorer holds the new network, but writing %s failed: %w (run the same command again)", networkFile(c, name), err)
	}
	return os.Remove(pending)
}

// loadNetworkChange reads the network file of network name and its
// pending change; the change is nil when there is none.
func loadNetworkChange(c *cli.Context, name string) (*wgNetwork, *wgChange, error) {
	n, err := loadNetwork(c, name)
	if err != nil {
		return nil, nil, err
	}
	var ch wgChange
	switch err := readJSONFile(pendingFile(c, name), &ch); {
	case errors.Is(err, os.ErrNotExist):
		return n, nil, nil
	case err != nil:
		return nil, nil, err
	}
	return n, &ch, nil
}

// sameAdd checks that the pending change ch adds to n exactly the members
// want (node, subnet and public address): the command run again.
func (ch *wgChange) sameAdd(n *wgNetwork, want []wgMember) error {
	var added []wgMember
	for _, m := range ch.Network.Members {
		if !slices.ContainsFunc(n.Members, func(o wgMember) bool { return o.Node == m.Node }) {
			added = append(added, wgMember{Node: m.Node, Subnet: m.Subnet, PublicIP: m.PublicIP})
		}
	}
	same := len(added) == len(want)
	for _, w := range want {
		same = same && slices.Contains(added, wgMember{Node: w.Node, Subnet: w.Subnet, PublicIP: w.PublicIP})
	}
	if !same {
		var desc []string
		for _, m := range added {
			spec := "--member " + m.Node + "=" + m.Subnet
			if m.PublicIP != "" {
				spec += "@" + m.PublicIP
			}
			desc = append(desc, spec)
		}
		return fmt.Errorf("%w: an earlier `network add` of network %q is unfinished: run it again with the same members to finish it: %s",
			ErrUsage, n.Name, strings.Join(desc, " "))
	}
	return nil
}

// converge brings every member of ch.Network to its reservation at the
// explorer, new members first, writing the pending file after each new
// reservation (to record its ID). It prints a line per member: the reservation ID,
// created, updated or unchanged, and the version the explorer holds.
func (s *session) converge(ctx context.Context, ch *wgChange) error {
	n := &ch.Network
	ak, err := wgtypes.ParseKey(n.AccessKey)
	if err != nil {
		return fmt.Errorf("%w: access key: %w", ErrNetworkFile, err)
	}
	access := ak.PublicKey().String()
	hub := n.hub()
	order := make([]int, 0, len(n.Members))
	for i, m := range n.Members {
		if _, isNew := ch.Keys[m.Node]; isNew {
			order = append(order, i)
		}
	}
	for i, m := range n.Members {
		if _, isNew := ch.Keys[m.Node]; !isNew {
			order = append(order, i)
		}
	}
	var mine []*provision.Reservation // the owner's reservations, listed once if needed
	for _, i := range order {
		m := &n.Members[i]
		peers := n.peers(i, hub, access)
		if m.Reservation == "" {
			if mine == nil {
				if mine, err = s.client.ListReservations(ctx, ""); err != nil {
					return fmt.Errorf("looking for member %s's reservation: %w", m.Node, err)
				}
			}
			m.Reservation = ch.created(mine, m)
		}
		if m.Reservation == "" {
			id, err := s.createMember(ctx, n, m, ch.Keys[m.Node], peers)
			if err != nil {
				return fmt.Errorf("member %s: %w", m.Node, err)
			}
			m.Reservation = id
			if err := writeJSONFile(pendingFile(s.c, n.Name), ch); err != nil {
				return fmt.Errorf("recording member %s's reservation %s: %w", m.Node, id, err)
			}
			if _, err := fmt.Fprintf(s.c.App.Writer, "%s created v0 %s\n", id, m.Node); err != nil {
				return err
			}
			continue
		}
		action, version, err := s.updateMember(ctx, n, m, peers)
		if err != nil {
			return fmt.Errorf("member %s (reservation %s): %w", m.Node, m.Reservation, err)
		}
		if _, err := fmt.Fprintf(s.c.App.Writer, "%s %s v%d %s\n", m.Reservation, action, version, m.Node); err != nil {
			return err
		}
	}
	return nil
}

// created returns the ID of the reservation of new member m that an
// earlier run of the change created (see the top of the file), or "".
func (ch *wgChange) created(mine []*provision.Reservation, m *wgMember) string {
	for _, r := range mine {
		if r.Type != provision.NetworkReservation || r.NodeID != m.Node || r.ToDelete || r.Created.Before(ch.Started) ||
			(r.Result != nil && r.Result.State == provision.StateDeleted) || verify(r) != nil {
			continue
		}
		if w, err := r.Workload(); err == nil && w.(*provision.Network).Name == ch.Network.Name {
			return r.ID
		}
	}
	return ""
}

// createMember signs and submits the reservation of new member m, its
// private key (key) sealed to its node, and returns its ID.
func (s *session) createMember(ctx context.Context, n *wgNetwork, m *wgMember, key string, peers []provision.WireGuardPeer) (string, error) {
	k, err := wgtypes.ParseKey(key)
	if err != nil {
		return "", fmt.Errorf("%w: the new member's key: %w", ErrNetworkFile, err)
	}
	pub, err := identity.PublicKey(m.Node)
	if err != nil {
		return "", err
	}
	sealed, err := identity.Seal(pub, k[:])
	if err != nil {
		return "", err
	}
	r, err := s.sign(m.Node, provision.NetworkReservation, provision.Network{Name: n.Name, IPRange: n.IPRange, Subnet: m.Subnet,
		WireGuard: &provision.WireGuard{PrivateKey: sealed, ListenPort: m.ListenPort, Peers: peers}})
	if err != nil {
		return "", err
	}
	return s.client.CreateReservation(ctx, r)
}

// updateMember reads member m's reservation at the explorer and, unless
// its peers are peers already, signs and submits its next version with
// them. It returns what it did and the version the explorer holds.
func (s *session) updateMember(ctx context.Context, n *wgNetwork, m *wgMember, peers []provision.WireGuardPeer) (string, uint32, error) {
	cur, err := s.client.GetReservation(ctx, m.Reservation)
	if err != nil {
		return "", 0, err
	}
	if err := verify(cur); err != nil {
		return "", 0, err
	}
	if _, mine := s.owner(cur); !mine {
		return "", 0, fmt.Errorf("%w: the reservation is owned by %s, not by your key", ErrNetworkFile, cur.UserID)
	}
	if cur.ToDelete {
		return "", 0, fmt.Errorf("%w: the reservation is being deleted", ErrUsage)
	}
	if cur.Type != provision.NetworkReservation || cur.NodeID != m.Node {
		return "", 0, fmt.Errorf("%w: the reservation is a %s on node %s, not this member's network", ErrNetworkFile, cur.Type, cur.NodeID)
	}
	w, err := cur.Workload()
	if err != nil {
		return "", 0, err
	}
	nw := w.(*provision.Network)
	if nw.Name != n.Name || nw.Subnet != m.Subnet || nw.WireGuard == nil {
		return "", 0, fmt.Errorf("%w: the reservation holds network %q subnet %s (WireGuard: %t), not this member's", ErrNetworkFile, nw.Name, nw.Subnet, nw.WireGuard != nil)
	}
	if reflect.DeepEqual(nw.WireGuard.Peers, peers) {
		return "unchanged", cur.Version, nil
	}
	nw.WireGuard.Peers = peers
	data, err := json.Marshal(nw)
	if err != nil {
		return "", 0, err
	}
	r := &provision.Reservation{Type: cur.Type, Data: data, Duration: cur.Duration, Reference: cur.Reference}
	nextVersion(cur, r)
	if _, err := r.Workload(); err != nil {
		return "", 0, err
	}
	r.Sign(s.key)
	if err := s.client.UpdateReservation(ctx, r); err != nil {
		return "", 0, err
	}
	return "updated", r.Version, nil
}

// removeMember is `provctl network remove`: see the comment at the top of
// the file.
func removeMember(ctx context.Context, s *session) error {
	c := s.c
	name, node := c.String("name"), c.String("node")
	n, ch, err := loadNetworkChange(c, name)
	if err != nil {
		return err
	}
	switch {
	case ch != nil && (ch.Removed == nil || ch.Removed.Node != node):
		return fmt.Errorf("%w: an earlier change of network %q is unfinished (%s): run the same command again to finish it", ErrUsage, name, pendingFile(c, name))
	case ch != nil:
		fmt.Fprintf(c.App.ErrWriter, "finishing the remove started at %s (%s)\n", ch.Started.Format(time.RFC3339), pendingFile(c, name))
	default:
		i := slices.IndexFunc(n.Members, func(m wgMember) bool { return m.Node == node })
		switch {
		case i < 0:
			return fmt.Errorf("%w: node %s is not a member of network %q", ErrUsage, node, name)
		case i == n.hub():
			return fmt.Errorf("%w: node %s is the hub of network %q: the others reach each other through it", ErrUsage, node, name)
		}
		removed := n.Members[i]
		ch = &wgChange{Network: *n, Keys: map[string]string{}, Started: time.Now().UTC(), Removed: &removed}
		ch.Network.Members = slices.Delete(slices.Clone(n.Members), i, i+1)
		if err := writeJSONFile(pendingFile(c, name), ch); err != nil {
			return fmt.Errorf("recording the change: %w", err)
		}
	}
	return s.finish(ctx, ch, func() error { return s.deleteMember(ctx, ch.Removed) })
}

// deleteMember deletes the reservation of removed member m, unless it is
// being deleted already, and prints a line: its ID, deleted, its version
// and node.
func (s *session) deleteMember(ctx context.Context, m *wgMember) error {
	cur, err := s.client.GetReservation(ctx, m.Reservation)
	if err == nil {
		err = verify(cur)
	}
	if err == nil && !cur.ToDelete {
		cur, err = s.client.DeleteReservation(ctx, m.Reservation)
	}
	if err != nil {
		return fmt.Errorf("member %s (reservation %s): %w", m.Node, m.Reservation, err)
	}
	_, err = fmt.Fprintf(s.c.App.Writer, "%s deleted v%d %s\n", m.Reservation, cur.Version, m.Node)
	return err
}
