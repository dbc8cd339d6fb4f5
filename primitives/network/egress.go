package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"runtime"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/provision"
)

// Egress and published ports.
//
// With an uplink (Options.Uplink, the node's public interface), every
// network gets a veth pair to the node's own namespace: "prv-up" inside the
// network, "prv-e<10 hex of the network id>" on the node, addressed as a
// /30 of LinkRange (the slot is found from a hash of the network id and
// recorded by the address itself). Two nftables tables do the rest:
//
//	network namespace, table ip prv-net (gone with the namespace):
//	  postrouting  oifname prv-up masquerade
//	  prerouting   one dnat rule per published port: to the container's ip:port
//	  input        from prv-up only established/related
//	  forward      from prv-up only established/related or dnat-ed
//	node namespace, table ip prv-node:
//	  postrouting  oifname <uplink> ip saddr LinkRange masquerade
//	  prerouting   one dnat rule per published port: to the network's end of the pair
//	  input        from prv-e* only established/related: no node address, no host service
//	  forward      from prv-e* only out of the uplink (never into another network);
//	               into prv-e* only established/related or dnat-ed
//
// A published port's rules carry the comment "prv-<container> <network>
// <port>/<protocol>", so the kernel itself records who holds which port.

// LinkRange is where the /30 links between the node and its networks are
// addressed from (the shared address space of RFC 6598).
var LinkRange = &net.IPNet{IP: net.IPv4(100, 64, 0, 0).To4(), Mask: net.CIDRMask(10, 32)}

// UplinkLink is the name of a network's end of its link to the node.
const UplinkLink = provision.Prefix + "up"

const (
	uplinkPrefix = provision.Prefix + "e"
	nodeTable    = provision.Prefix + "node"
	netTable     = provision.Prefix + "net"
	linkSlots    = 1 << 20 // /30s in LinkRange
)

// Sentinel errors of egress and published ports.
var (
	ErrPortTaken   = errors.New("network: port already published on this node")
	ErrPortRange   = errors.New("network: port outside the node's publishable range")
	ErrNoUplink    = errors.New("network: the node has no uplink for published ports")
	ErrNoLinkSlots = errors.New("network: no free link address")
)

// UplinkName returns the name of the node's end of network id's link.
func UplinkName(id string) string { return uplinkPrefix + id[:10] }

func uplinkAlias(id string) string { return provision.Prefix + "net " + id }

// Port is a published port as the node holds it.
type Port struct {
	// Port is the node's port.
	Port int
	// ContainerPort is the container's port.
	ContainerPort int
	// Protocol is "tcp" or "udp".
	Protocol string
}

func (p Port) proto() byte {
	if p.Protocol == "udp" {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

func (p Port) key() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// portComment labels the rules of container c's port p in network id.
func portComment(c, id string, p Port) string {
	return fmt.Sprintf("%s%s %s %s", provision.Prefix, c, id, p.key())
}

// parseComment returns the container, the network and the port key of a
// published port's rule.
func parseComment(s string) (c, id, key string, ok bool) {
	rest, ok := strings.CutPrefix(s, provision.Prefix)
	if !ok {
		return "", "", "", false
	}
	f := strings.Fields(rest)
	if len(f) != 3 {
		return "", "", "", false
	}
	return f[0], f[1], f[2], true
}

// inNamespace runs fn on a locked thread switched into ns; if switching
// back fails the thread stays locked and dies with its goroutine.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("getting current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering namespace: %w", err)
			return
		}
		err = fn()
		if serr := netns.Set(orig); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("switching back: %w", serr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// enableForwarding turns IPv4 forwarding on in the calling thread's
// network namespace (/proc/sys/net follows the opener's namespace).
func enableForwarding() error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enabling ip forwarding: %w", err)
	}
	return nil
}

// ifname is an interface name as nftables compares it (NUL padded);
// a prefix match compares only the prefix's bytes.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func metaIs(key expr.MetaKey, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

func metaIsNot(key expr.MetaKey, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: data},
	}
}

func ctBits(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

var (
	established = ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
	dnated      = ctBits(expr.CtKeySTATUS, 1<<5) // IPS_DST_NAT
	accept      = &expr.Verdict{Kind: expr.VerdictAccept}
	drop        = &expr.Verdict{Kind: expr.VerdictDrop}
)

func rule(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch p := p.(type) {
		case []expr.Any:
			out = append(out, p...)
		case expr.Any:
			out = append(out, p)
		}
	}
	return out
}

type chainSpec struct {
	name  string
	typ   nftables.ChainType
	hook  *nftables.ChainHook
	prio  *nftables.ChainPriority
	rules [][]expr.Any
	// keep leaves the chain's rules alone (published ports live there).
	keep bool
}

// ensureTable creates table name with chains, replacing the rules of
// every chain that is not kept, in one batch.
func ensureTable(c *nftables.Conn, name string, chains []chainSpec) error {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: name})
	policy := nftables.ChainPolicyAccept
	for _, cs := range chains {
		ch := c.AddChain(&nftables.Chain{Name: cs.name, Table: t, Type: cs.typ, Hooknum: cs.hook, Priority: cs.prio, Policy: &policy})
		if cs.keep {
			continue
		}
		c.FlushChain(ch)
		for _, r := range cs.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing nftables table %s: %w", name, err)
	}
	return nil
}

// netChains are the chains of a network's table.
func netChains(wgPort int) []chainSpec {
	up := ifname(UplinkLink)
	input := [][]expr.Any{rule(metaIs(expr.MetaKeyIIFNAME, up), established, accept)}
	if wgPort != 0 {
		input = append(input, rule(metaIs(expr.MetaKeyIIFNAME, up), metaIs(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_UDP}),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(wgPort))},
			accept))
	}
	input = append(input, rule(metaIs(expr.MetaKeyIIFNAME, up), drop))
	return []chainSpec{
		{name: "postrouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, prio: nftables.ChainPriorityNATSource,
			rules: [][]expr.Any{rule(metaIs(expr.MetaKeyOIFNAME, up), &expr.Masq{})}},
		{name: "prerouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPrerouting, prio: nftables.ChainPriorityNATDest, keep: true},
		{name: "input", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, prio: nftables.ChainPriorityFilter,
			rules: input},
		{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, prio: nftables.ChainPriorityFilter,
			rules: [][]expr.Any{
				rule(metaIs(expr.MetaKeyIIFNAME, up), established, accept),
				rule(metaIs(expr.MetaKeyIIFNAME, up), dnated, accept),
				rule(metaIs(expr.MetaKeyIIFNAME, up), drop),
			}},
	}
}

// nodeChains are the chains of the node's table.
func nodeChains(uplink string) []chainSpec {
	nets := []byte(uplinkPrefix) // prefix match: every network's link
	up := ifname(uplink)
	rng := binary.BigEndian.Uint32(LinkRange.IP)
	return []chainSpec{
		{name: "postrouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, prio: nftables.ChainPriorityNATSource,
			rules: [][]expr.Any{rule(metaIs(expr.MetaKeyOIFNAME, up),
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(LinkRange.Mask), Xor: []byte{0, 0, 0, 0}},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint32(rng)},
				&expr.Masq{})}},
		{name: "prerouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPrerouting, prio: nftables.ChainPriorityNATDest, keep: true},
		{name: "input", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, prio: nftables.ChainPriorityFilter,
			rules: [][]expr.Any{
				rule(metaIs(expr.MetaKeyIIFNAME, nets), established, accept),
				rule(metaIs(expr.MetaKeyIIFNAME, nets), drop),
			}},
		{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, prio: nftables.ChainPriorityFilter,
			rules: [][]expr.Any{
				rule(metaIs(expr.MetaKeyIIFNAME, nets), metaIsNot(expr.MetaKeyOIFNAME, up), drop),
				rule(metaIs(expr.MetaKeyOIFNAME, nets), established, accept),
				rule(metaIs(expr.MetaKeyOIFNAME, nets), dnated, accept),
				rule(metaIs(expr.MetaKeyOIFNAME, nets), drop),
			}},
	}
}

// dnatRule forwards port p arriving on link in to addr:toPort.
func dnatRule(in string, p Port, addr net.IP, toPort int) []expr.Any {
	return rule(metaIs(expr.MetaKeyIIFNAME, ifname(in)),
		metaIs(expr.MetaKeyL4PROTO, []byte{p.proto()}),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(p.Port))},
		&expr.Immediate{Register: 1, Data: addr.To4()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(uint16(toPort))},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	)
}

// slotAddrs returns the node's and the network's address of link slot s.
func slotAddrs(s uint32) (node, network *net.IPNet) {
	base := binary.BigEndian.Uint32(LinkRange.IP) + s*4
	mk := func(v uint32) *net.IPNet {
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, v)
		return &net.IPNet{IP: ip, Mask: net.CIDRMask(30, 32)}
	}
	return mk(base + 1), mk(base + 2)
}

func slotOf(ip net.IP) (uint32, bool) {
	ip4 := ip.To4()
	if ip4 == nil || !LinkRange.Contains(ip4) {
		return 0, false
	}
	return (binary.BigEndian.Uint32(ip4) - binary.BigEndian.Uint32(LinkRange.IP)) / 4, true
}

func firstSlot(id string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(id))
	return h.Sum32() % linkSlots
}

// uplinks returns the node's links to networks: network id → link.
func uplinks(h *netlink.Handle) (map[string]netlink.Link, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing node links: %w", err)
	}
	out := map[string]netlink.Link{}
	for _, l := range links {
		a := l.Attrs()
		if !strings.HasPrefix(a.Name, uplinkPrefix) {
			continue
		}
		if id, ok := strings.CutPrefix(a.Alias, provision.Prefix+"net "); ok && networkIDRe.MatchString(id) {
			out[id] = l
		}
	}
	return out, nil
}

// linkAddr returns the IPv4 address of a link in LinkRange.
func linkAddr(h *netlink.Handle, l netlink.Link) (*net.IPNet, error) {
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if LinkRange.Contains(a.IP) {
			return a.IPNet, nil
		}
	}
	return nil, nil
}

// ensureEgress gives network id (namespace nns, netlink handle nh) its
// link to the node, its routes, forwarding and both tables. The caller
// holds m.mu.
func (m *Manager) ensureEgress(id string, nns netns.NsHandle, nh *netlink.Handle, wgPort int) error {
	node, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("opening netlink on the node: %w", err)
	}
	defer node.Close()
	if err := m.ensureNode(); err != nil {
		return err
	}
	all, err := uplinks(node)
	if err != nil {
		return err
	}
	name := UplinkName(id)
	link := all[id]
	if link != nil {
		if _, err := nh.LinkByName(UplinkLink); err != nil {
			// Half a pair (the network's namespace was made again): start over.
			if err := delLink(node, link); err != nil {
				return fmt.Errorf("deleting stale link %s: %w", name, err)
			}
			delete(all, id)
			link = nil
		}
	} else if old, err := node.LinkByName(name); err == nil {
		if err := delLink(node, old); err != nil { // unlabelled: a crash between creating and labelling it
			return fmt.Errorf("deleting unlabelled link %s: %w", name, err)
		}
	}
	var nodeAddr, netAddr *net.IPNet
	if link != nil {
		a, err := linkAddr(node, link)
		if err != nil {
			return err
		}
		if a != nil {
			s, _ := slotOf(a.IP)
			nodeAddr, netAddr = slotAddrs(s)
		}
	}
	if nodeAddr == nil {
		used := map[uint32]bool{}
		for other, l := range all {
			if other == id {
				continue
			}
			if a, err := linkAddr(node, l); err == nil && a != nil {
				if s, ok := slotOf(a.IP); ok {
					used[s] = true
				}
			}
		}
		s, found := firstSlot(id), false
		for range len(used) + 1 {
			if !used[s] {
				found = true
				break
			}
			s = (s + 1) % linkSlots
		}
		if !found {
			return provision.Temporary(fmt.Errorf("network %s: %w", id, ErrNoLinkSlots))
		}
		nodeAddr, netAddr = slotAddrs(s)
	}
	if link == nil {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: name, Alias: uplinkAlias(id)},
			PeerName:      UplinkLink,
			PeerNamespace: netlink.NsFd(nns),
		}
		if err := node.LinkAdd(veth); err != nil {
			return fmt.Errorf("adding link %s: %w", name, err)
		}
		if link, err = node.LinkByName(name); err != nil {
			return fmt.Errorf("finding new link %s: %w", name, err)
		}
		if link.Attrs().Alias != uplinkAlias(id) {
			if err := node.LinkSetAlias(link, uplinkAlias(id)); err != nil {
				return fmt.Errorf("labelling link %s: %w", name, err)
			}
		}
	}
	if err := setOnlyAddr(node, link, nodeAddr); err != nil {
		return err
	}
	if err := node.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	up, err := nh.LinkByName(UplinkLink)
	if err != nil {
		return fmt.Errorf("finding %s: %w", UplinkLink, err)
	}
	if err := setOnlyAddr(nh, up, netAddr); err != nil {
		return err
	}
	if err := nh.LinkSetUp(up); err != nil {
		return fmt.Errorf("setting %s up: %w", UplinkLink, err)
	}
	def := &netlink.Route{LinkIndex: up.Attrs().Index, Gw: nodeAddr.IP, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
	if err := nh.RouteReplace(def); err != nil {
		return fmt.Errorf("adding default route via %s: %w", nodeAddr.IP, err)
	}
	if err := inNamespace(nns, enableForwarding); err != nil {
		return err
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(nns)))
	if err != nil {
		return fmt.Errorf("opening nftables in network %s: %w", id, err)
	}
	return ensureTable(c, netTable, netChains(wgPort))
}

// ensureNode turns forwarding on in the node's namespace and writes its
// table.
func (m *Manager) ensureNode() error {
	if err := enableForwarding(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	return ensureTable(c, nodeTable, nodeChains(m.uplink))
}

// inspectEgress reports what is missing of network id's egress.
func (m *Manager) inspectEgress(id string, nh *netlink.Handle) error {
	if _, err := nh.LinkByName(UplinkLink); err != nil {
		return fmt.Errorf("%w: no %s", ErrBroken, UplinkLink)
	}
	if _, err := netlink.LinkByName(UplinkName(id)); err != nil {
		return fmt.Errorf("%w: no %s on the node", ErrBroken, UplinkName(id))
	}
	return nil
}

// removeUplink deletes the node's end of network id's link (the kernel
// deletes the other end with it); absent is success.
func removeUplink(id string) error {
	l, err := netlink.LinkByName(UplinkName(id))
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finding %s: %w", UplinkName(id), err)
	}
	if l.Attrs().Alias != uplinkAlias(id) {
		return nil
	}
	if err := delLink(nodeHandle, l); err != nil {
		return fmt.Errorf("deleting %s: %w", UplinkName(id), err)
	}
	return nil
}

// publishedRule is a rule of a published port as the node holds it.
type publishedRule struct {
	rule      *nftables.Rule
	container string
	network   string
	key       string
}

// published lists the rules of published ports in the prerouting chain of
// table name on c; an absent table has none.
func published(c *nftables.Conn, name string) ([]publishedRule, error) {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name}
	rules, err := c.GetRules(t, &nftables.Chain{Name: "prerouting", Table: t})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing published ports in %s: %w", name, err)
	}
	var out []publishedRule
	for _, r := range rules {
		s, ok := userdata.GetString(r.UserData, userdata.TypeComment)
		if !ok {
			continue
		}
		if ctr, id, key, ok := parseComment(s); ok {
			out = append(out, publishedRule{rule: r, container: ctr, network: id, key: key})
		}
	}
	return out, nil
}
