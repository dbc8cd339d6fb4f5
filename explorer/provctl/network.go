package provctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// A WireGuard network across nodes, as `provctl network create` builds
// it: one network reservation per member node, each carrying the node's
// WireGuard private key sealed to that node, its listen port and its
// peers. The first member with a public address is the hub: members
// without one, and the owner's access peer (the laptop), reach every
// other member through it; members with a public address reach each
// other directly. The owner keeps the network's keys in a file beside
// the user key (<key>.net-<name>.json, mode 0600), which
// `provctl network access` turns into a wg-quick configuration.
// `provctl network add` adds members later (netadd.go).

// ErrNetworkFile is returned when the network's local file is missing or
// unreadable.
var ErrNetworkFile = errors.New("provctl: network file")

// wgMember is one node of a WireGuard network.
type wgMember struct {
	Node       string `json:"node"`
	Subnet     string `json:"subnet"`
	PublicIP   string `json:"public_ip,omitempty"`
	PublicKey  string `json:"public_key"`
	ListenPort int    `json:"listen_port"`
	// Reservation is the id of the member's network reservation.
	Reservation string `json:"reservation,omitempty"`
}

// wgNetwork is what the owner keeps of a WireGuard network.
type wgNetwork struct {
	Name    string     `json:"name"`
	IPRange string     `json:"ip_range"`
	Members []wgMember `json:"members"`
	// Access is the owner's access peer: its address and private key.
	AccessAddress string `json:"access_address"`
	AccessKey     string `json:"access_private_key"`
}

func networkFile(c *cli.Context, name string) string {
	return c.String("key") + ".net-" + name + ".json"
}

func networkCommand() *cli.Command {
	nameFlag := func() cli.Flag { return &cli.StringFlag{Name: "name", Usage: "network `NAME`", Required: true} }
	return &cli.Command{
		Name:  "network",
		Usage: "WireGuard networks across nodes",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "reserve a network on several nodes, joined by WireGuard, with an access peer for you",
				Flags: []cli.Flag{nameFlag(),
					&cli.StringFlag{Name: "ip-range", Usage: "whole range of the network (IPv4 `CIDR`)", Required: true},
					&cli.StringSliceFlag{Name: "member", Usage: "`NODE=SUBNET[@PUBLIC_IP]`: a node, its part of the range, and its public address if it has one (repeatable; at least one member needs a public address)", Required: true},
					&cli.IntFlag{Name: "port", Usage: "WireGuard listen `PORT` on every member", Value: 51820},
					&cli.StringFlag{Name: "access", Usage: "your access peer's `ADDRESS` (a /32 inside the range, outside every subnet)", Required: true},
					&cli.DurationFlag{Name: "duration", Usage: "how long the network lives", Value: 24 * time.Hour},
				},
				Action: withClient(createNetwork),
			},
			{
				Name:  "add",
				Usage: "add members to a network you created (the same command again finishes a failed run)",
				Description: "Reserves the network on the new nodes and signs the next version of every member whose peers change;\n" +
					"prints a line per member: ID created|updated|unchanged vVERSION NODE. The local file changes once the explorer accepted all.",
				Flags: []cli.Flag{nameFlag(),
					&cli.StringSliceFlag{Name: "member", Usage: "`NODE=SUBNET[@PUBLIC_IP]`: a new node, its part of the range, and its public address if it has one (repeatable)", Required: true},
					&cli.IntFlag{Name: "port", Usage: "WireGuard listen `PORT` on the new members", Value: 51820},
					&cli.DurationFlag{Name: "duration", Usage: "how long the new members' reservations live", Value: 24 * time.Hour},
				},
				Action: withClient(addMembers),
			},
			{
				Name:  "remove",
				Usage: "remove a member (not the hub) from a network you created (the same command again finishes a failed run)",
				Description: "Signs the next version of every member whose peers change, then deletes the member's reservation;\n" +
					"prints a line per member: ID updated|unchanged|deleted vVERSION NODE.",
				Flags:  []cli.Flag{nameFlag(), &cli.StringFlag{Name: "node", Usage: "`NODE` ID of the member to remove", Required: true}},
				Action: withClient(removeMember),
			},
			{
				Name:   "access",
				Usage:  "print a wg-quick configuration that joins you to the network (through its hub)",
				Flags:  []cli.Flag{nameFlag()},
				Action: networkAccess,
			},
		},
	}
}

// parseMember reads NODE=SUBNET[@PUBLIC_IP].
func parseMember(s string) (wgMember, error) {
	node, rest, ok := strings.Cut(s, "=")
	if !ok {
		return wgMember{}, fmt.Errorf("%w: --member %q: want NODE=SUBNET[@PUBLIC_IP]", ErrUsage, s)
	}
	if _, err := identity.PublicKey(node); err != nil {
		return wgMember{}, fmt.Errorf("%w: --member %q: %w", ErrUsage, s, err)
	}
	subnet, ip, _ := strings.Cut(rest, "@")
	if ip != "" {
		if a, err := netip.ParseAddr(ip); err != nil || !a.Is4() {
			return wgMember{}, fmt.Errorf("%w: --member %q: public address %q is not IPv4", ErrUsage, s, ip)
		}
	}
	return wgMember{Node: node, Subnet: subnet, PublicIP: ip}, nil
}

func createNetwork(ctx context.Context, s *session) error {
	c := s.c
	n := wgNetwork{Name: c.String("name"), IPRange: c.String("ip-range"), AccessAddress: c.String("access")}
	if _, err := os.Stat(networkFile(c, n.Name)); err == nil {
		return fmt.Errorf("%w: %s exists: network %q was created already", ErrUsage, networkFile(c, n.Name), n.Name)
	}
	keys := map[string]wgtypes.Key{}
	for _, spec := range c.StringSlice("member") {
		m, err := parseMember(spec)
		if err != nil {
			return err
		}
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return err
		}
		m.PublicKey, m.ListenPort = k.PublicKey().String(), c.Int("port")
		keys[m.Node] = k
		n.Members = append(n.Members, m)
	}
	if err := n.check(); err != nil {
		return err
	}
	hub := n.hub()
	access, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return err
	}
	n.AccessKey = access.String()
	var rs []*provision.Reservation
	for i, m := range n.Members {
		pub, _ := identity.PublicKey(m.Node)
		k := keys[m.Node]
		sealed, err := identity.Seal(pub, k[:])
		if err != nil {
			return err
		}
		w := provision.Network{Name: n.Name, IPRange: n.IPRange, Subnet: m.Subnet, WireGuard: &provision.WireGuard{
			PrivateKey: sealed, ListenPort: m.ListenPort, Peers: n.peers(i, hub, access.PublicKey().String()),
		}}
		r, err := s.sign(m.Node, provision.NetworkReservation, w)
		if err != nil {
			return fmt.Errorf("member %s: %w", m.Node, err)
		}
		rs = append(rs, r)
	}
	for i, r := range rs {
		id, err := s.client.CreateReservation(ctx, r)
		if err != nil {
			return fmt.Errorf("member %s: %w", r.NodeID, err)
		}
		n.Members[i].Reservation = id
		if _, err := fmt.Fprintln(c.App.Writer, id); err != nil {
			return err
		}
	}
	return writeJSONFile(networkFile(c, n.Name), n)
}

// peers returns the peers of member i: the hub knows everyone; other
// members with a public address know each other and reach the rest
// through the hub; members without one know only the hub.
func (n *wgNetwork) peers(i, hub int, accessKey string) []provision.WireGuardPeer {
	me := n.Members[i]
	endpoint := func(m wgMember) string {
		if m.PublicIP == "" {
			return ""
		}
		return net.JoinHostPort(m.PublicIP, fmt.Sprint(m.ListenPort))
	}
	var out []provision.WireGuardPeer
	if i == hub {
		for j, m := range n.Members {
			if j != i {
				out = append(out, provision.WireGuardPeer{PublicKey: m.PublicKey, Endpoint: endpoint(m), AllowedIPs: []string{m.Subnet}})
			}
		}
		return append(out, provision.WireGuardPeer{PublicKey: accessKey, AllowedIPs: []string{n.AccessAddress}})
	}
	viaHub := []string{n.Members[hub].Subnet, n.AccessAddress}
	for j, m := range n.Members {
		switch {
		case j == i || j == hub:
		case me.PublicIP != "" && m.PublicIP != "":
			out = append(out, provision.WireGuardPeer{PublicKey: m.PublicKey, Endpoint: endpoint(m), AllowedIPs: []string{m.Subnet}})
		default:
			viaHub = append(viaHub, m.Subnet)
		}
	}
	h := n.Members[hub]
	return append(out, provision.WireGuardPeer{PublicKey: h.PublicKey, Endpoint: endpoint(h), AllowedIPs: viaHub})
}

// sign builds and signs a reservation of w on node, checking it as the
// node will.
func (s *session) sign(node string, typ provision.ReservationType, w any) (*provision.Reservation, error) {
	data, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	r := &provision.Reservation{NodeID: node, Type: typ, Data: data, Created: time.Now().UTC(), Duration: s.c.Duration("duration")}
	if _, err := r.Workload(); err != nil {
		return nil, err
	}
	r.Sign(s.key)
	return r, nil
}

func networkAccess(c *cli.Context) error {
	n, err := loadNetwork(c, c.String("name"))
	if err != nil {
		return err
	}
	i := n.hub()
	if i < 0 {
		return fmt.Errorf("%w: no member with a public address", ErrNetworkFile)
	}
	hub := n.Members[i]
	_, err = fmt.Fprintf(c.App.Writer, `# wg-quick configuration of network %s (through node %s)
[Interface]
PrivateKey = %s
Address = %s

[Peer]
PublicKey = %s
Endpoint = %s
AllowedIPs = %s
PersistentKeepalive = 25
`, n.Name, hub.Node, n.AccessKey, n.AccessAddress, hub.PublicKey, net.JoinHostPort(hub.PublicIP, fmt.Sprint(hub.ListenPort)), n.IPRange)
	return err
}
