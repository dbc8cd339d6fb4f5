package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/provision"
)

// Publish forwards ports of the node's uplink to container containerID,
// which holds ip in network id. It refuses, before changing anything, a
// node without uplink (ErrNoUplink), a port outside the publishable range
// (ErrPortRange) and a port another container holds (ErrPortTaken), all
// permanent. It is idempotent; ports the container held but no longer
// asks for are freed.
func (m *Manager) Publish(ctx context.Context, id, containerID string, ip net.IP, ports []Port) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := checkContainerID(containerID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.uplink == "" {
		return provision.Permanentf("publishing ports of container %s: %w", containerID, ErrNoUplink)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkPorts(containerID, ports); err != nil {
		return err
	}
	if err := m.publishLocked(id, containerID, ip, ports); err != nil {
		return err
	}
	m.log.Debug().Str("network", id).Str("container", containerID).Int("ports", len(ports)).Msg("ports published")
	return nil
}

// checkPorts refuses ports that owner may not take: outside the range
// (ErrPortRange) or held by another owner (ErrPortTaken), both permanent.
// The caller holds m.mu.
func (m *Manager) checkPorts(owner string, ports []Port) error {
	want := map[string]bool{}
	for _, p := range ports {
		if p.Port < m.portMin || p.Port > m.portMax {
			return provision.Permanentf("%w: %d is not between %d and %d", ErrPortRange, p.Port, m.portMin, m.portMax)
		}
		want[p.key()] = true
	}
	held, err := m.publishedPorts()
	if err != nil {
		return err
	}
	for key, o := range held {
		if want[key] && o != owner {
			return provision.Permanentf("%w: %s is held by %s", ErrPortTaken, key, o)
		}
	}
	return nil
}

// publishLocked makes owner's published ports those of ports: a dnat on
// the uplink to network id's link and, when ip is set, a dnat inside the
// network to ip (a container); without ip the network's namespace itself
// receives them (its WireGuard port). The caller holds m.mu and has
// checked the ports.
func (m *Manager) publishLocked(id, owner string, ip net.IP, ports []Port) error {
	want := map[string]Port{}
	for _, p := range ports {
		want[p.key()] = p
	}
	if err := m.ensureNode(); err != nil {
		return err
	}
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	held, err := published(nc, nodeTable)
	if err != nil {
		return err
	}
	nns, err := m.open(Namespace(id))
	if err != nil {
		return provision.Temporary(fmt.Errorf("opening network %s: %w", id, err))
	}
	defer nns.Close()
	link, err := netlink.LinkByName(UplinkName(id))
	if err != nil {
		return provision.Temporary(fmt.Errorf("network %s has no link to the node yet: %w", id, err))
	}
	node, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("opening netlink on the node: %w", err)
	}
	defer node.Close()
	a, err := linkAddr(node, link)
	if err != nil {
		return err
	}
	if a == nil {
		return provision.Temporary(fmt.Errorf("network %s: %w: its link has no address", id, ErrBroken))
	}
	s, _ := slotOf(a.IP)
	_, netAddr := slotAddrs(s)
	if err := syncRules(nc, nodeTable, held, owner, id, want, m.uplink, netAddr.IP, true); err != nil {
		return err
	}
	if ip == nil {
		return nil
	}
	cc, err := nftables.New(nftables.WithNetNSFd(int(nns)))
	if err != nil {
		return fmt.Errorf("opening nftables in network %s: %w", id, err)
	}
	inNet, err := published(cc, netTable)
	if err != nil {
		return err
	}
	return syncRules(cc, netTable, inNet, owner, id, want, UplinkLink, ip, false)
}

// syncRules makes container c's rules in table name those of want: a
// dnat from link in to addr (the node's port when toNodePort, else the
// container's port), each labelled with portComment.
func syncRules(conn *nftables.Conn, name string, held []publishedRule, c, id string, want map[string]Port, in string, addr net.IP, toNodePort bool) error {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name}
	ch := &nftables.Chain{Name: "prerouting", Table: t}
	have := map[string]bool{}
	for _, r := range held {
		if r.container != c {
			continue
		}
		if _, ok := want[r.key]; ok && r.network == id && !have[r.key] {
			have[r.key] = true
			continue
		}
		if err := conn.DelRule(r.rule); err != nil {
			return fmt.Errorf("deleting rule of %s in %s: %w", r.key, name, err)
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if have[k] {
			continue
		}
		p := want[k]
		to := p.ContainerPort
		if toNodePort {
			to = p.Port
		}
		conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: dnatRule(in, p, addr, to),
			UserData: userdata.AppendString(nil, userdata.TypeComment, portComment(c, id, p))})
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("writing published ports in %s: %w", name, err)
	}
	return nil
}

// unpublish frees every port container c holds, on the node and in its
// networks. The caller holds m.mu.
func (m *Manager) unpublish(c string) error {
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	held, err := published(nc, nodeTable)
	if err != nil {
		return err
	}
	nets := map[string]bool{}
	for _, r := range held {
		if r.container == c {
			nets[r.network] = true
			if err := nc.DelRule(r.rule); err != nil {
				return fmt.Errorf("deleting rule of %s: %w", r.key, err)
			}
		}
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("freeing ports of container %s: %w", c, err)
	}
	for id := range nets {
		if checkID(id) != nil {
			continue
		}
		nns, err := m.open(Namespace(id))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		err = func() error {
			defer nns.Close()
			cc, err := nftables.New(nftables.WithNetNSFd(int(nns)))
			if err != nil {
				return fmt.Errorf("opening nftables in network %s: %w", id, err)
			}
			rules, err := published(cc, netTable)
			if err != nil {
				return err
			}
			for _, r := range rules {
				if r.container == c {
					if err := cc.DelRule(r.rule); err != nil {
						return fmt.Errorf("deleting rule of %s in network %s: %w", r.key, id, err)
					}
				}
			}
			return cc.Flush()
		}()
		if err != nil {
			return fmt.Errorf("freeing ports of container %s in network %s: %w", c, id, err)
		}
	}
	return nil
}

// Unpublish frees every port container containerID holds; none is
// success.
func (m *Manager) Unpublish(ctx context.Context, containerID string) error {
	if err := checkContainerID(containerID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unpublish(containerID)
}

// Published returns the node's published ports ("8080/tcp") and the
// container holding each.
func (m *Manager) Published(ctx context.Context) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.publishedPorts()
}

func (m *Manager) publishedPorts() (map[string]string, error) {
	out := map[string]string{}
	if m.uplink == "" {
		return out, nil
	}
	nc, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	held, err := published(nc, nodeTable)
	if err != nil {
		return nil, err
	}
	for _, r := range held {
		out[r.key] = r.container
	}
	return out, nil
}
