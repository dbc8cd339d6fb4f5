// Package network creates the network namespaces of provisiond's networks
// and attaches containers to them.
//
// A network is a named network namespace "prv-<NetworkID>" (bind-mounted
// under /run/netns, as `ip netns` does) holding a bridge "prv-br0" with the
// subnet's gateway address. A container gets a namespace of its own,
// "prv-c-<container id>", joined to the network by a veth pair: the
// container end is "eth0" with the container's IP and a default route via
// the gateway; the network end, "prv-v<10 hex of sha256(id)>", is a port of
// the bridge and carries the alias "prv-<container id> <ip>", so the
// kernel itself records which container holds which address. Two containers
// of one network reach each other through the bridge; namespaces of other
// networks have no link to it.
//
// Everything is done with netlink handles opened inside the namespaces; the
// only thread that ever switches namespace is the short-lived, locked one
// that creates a named namespace.
package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/provision"
)

// NamespaceDir is where named network namespaces are bind-mounted (the
// directory `ip netns` uses).
const NamespaceDir = "/run/netns"

// Bridge is the name of the bridge inside every network namespace.
const Bridge = provision.Prefix + "br0"

// ContainerLink is the name of a container's end of its veth pair, inside
// the container's namespace.
const ContainerLink = "eth0"

const containerNSPrefix = provision.Prefix + "c-"

// Sentinel errors of the network package.
var (
	ErrNotFound  = errors.New("network: network namespace not found")
	ErrBusy      = errors.New("network: containers are still attached")
	ErrIPOutside = errors.New("network: ip outside the network's subnet")
	ErrIPInUse   = errors.New("network: ip already used by another container")
	ErrBadID     = errors.New("network: bad id")
	ErrBroken    = errors.New("network: namespace incomplete")
)

var networkIDRe = regexp.MustCompile(`^[0-9a-f]{16}$`)

// Info describes a provisioned network.
type Info struct {
	// NetworkID is the network's id (provision.NetworkID of user and name).
	NetworkID string `json:"network_id"`
	// Namespace is the name of the network namespace.
	Namespace string `json:"namespace"`
	// Gateway is the bridge address with the subnet's mask (CIDR notation).
	Gateway string `json:"gateway"`
}

// Manager creates, inspects and removes networks and container
// attachments. It is safe for concurrent use.
type Manager struct {
	log    zerolog.Logger
	dir    string
	uplink string
	// portMin and portMax bound the ports containers may publish.
	portMin, portMax int
	helper           []string
	helperLogs       string
	// mu serialises changes, so that two containers cannot both take one
	// IP or one port.
	mu sync.Mutex
}

// Options configures a Manager.
type Options struct {
	// Log is the logger. Default zerolog.Nop() (the zero Logger).
	Log zerolog.Logger
	// Uplink is the node's public interface: networks reach the outside
	// through it (masqueraded) and containers publish ports on it. Default
	// "": networks are islands and publishing a port fails.
	Uplink string
	// PortMin and PortMax bound the node ports containers may publish, so
	// that the node's own services (ssh) are never taken over. Default
	// 1024 and 65535.
	PortMin, PortMax int
	// WireGuardHelper is the command (and its first arguments) that runs
	// a WireGuard device (wghelper.Run); "--interface NAME" is appended.
	// Default none: WireGuard networks fail.
	WireGuardHelper []string
	// HelperLogs is the directory of the helpers' logs. Default "": their
	// output is discarded.
	HelperLogs string
}

// New returns a Manager without uplink that logs to log.
func New(log zerolog.Logger) *Manager { return NewWith(Options{Log: log}) }

// NewWith returns a Manager configured by opts.
func NewWith(opts Options) *Manager {
	m := &Manager{log: opts.Log.With().Str("component", "network").Logger(), dir: NamespaceDir,
		uplink: opts.Uplink, portMin: opts.PortMin, portMax: opts.PortMax,
		helper: opts.WireGuardHelper, helperLogs: opts.HelperLogs}
	if m.portMin == 0 {
		m.portMin = 1024
	}
	if m.portMax == 0 {
		m.portMax = 65535
	}
	return m
}

// Namespace returns the name of the namespace of network id.
func Namespace(id string) string { return provision.Prefix + id }

// ContainerNamespace returns the name of the namespace of container id.
func ContainerNamespace(containerID string) string { return containerNSPrefix + containerID }

// PortName returns the name of the bridge port of container id inside its
// network's namespace (at most 15 characters, as the kernel requires).
func PortName(containerID string) string {
	sum := sha256.Sum256([]byte(containerID))
	return provision.Prefix + "v" + hex.EncodeToString(sum[:])[:10]
}

// NamespacePath returns the path of the named namespace name.
func (m *Manager) NamespacePath(name string) string { return filepath.Join(m.dir, name) }

func checkID(id string) error {
	if !networkIDRe.MatchString(id) {
		return provision.Permanent(fmt.Errorf("%w: network id %q", ErrBadID, id))
	}
	return nil
}

func checkContainerID(id string) error {
	if err := provision.ValidName("container id", id); err != nil {
		return provision.Permanent(fmt.Errorf("%w: %w", ErrBadID, err))
	}
	return nil
}

// Provision creates (or completes) the namespace of network id with its
// bridge holding gateway, and loopback up. It is idempotent: an existing
// namespace is brought to this state.
func (m *Manager) Provision(ctx context.Context, id string, gateway *net.IPNet) (Info, error) {
	return m.ProvisionWith(ctx, id, gateway, nil)
}

// ProvisionWith is Provision with a WireGuard interface (nil: none): its
// device runs in a helper process, its listen port is published on the
// uplink (an exclusive node port: ErrPortTaken, ErrPortRange) and the
// network's range is routed to it. Peers are replaced in place: those
// kept keep their sessions.
func (m *Manager) ProvisionWith(ctx context.Context, id string, gateway *net.IPNet, wg *WireGuardSpec) (Info, error) {
	if err := checkID(id); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// The WireGuard port is checked before anything is made: a refused
	// network leaves nothing.
	wgPort := 0
	if wg != nil {
		if m.uplink == "" {
			return Info{}, provision.Permanentf("wireguard of network %s: %w", id, ErrNoUplink)
		}
		wgPort = wg.ListenPort
		if err := m.checkPorts(wgOwner(id), []Port{{Port: wgPort, ContainerPort: wgPort, Protocol: "udp"}}); err != nil {
			return Info{}, err
		}
	}
	name := Namespace(id)
	ns, err := m.ensureNamespace(name)
	if err != nil {
		return Info{}, fmt.Errorf("creating namespace of network %s: %w", id, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return Info{}, fmt.Errorf("opening netlink in network %s: %w", id, err)
	}
	defer h.Close()
	if err := loUp(h); err != nil {
		return Info{}, fmt.Errorf("network %s: %w", id, err)
	}
	br, err := h.LinkByName(Bridge)
	if isNotFound(err) {
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: Bridge}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return Info{}, fmt.Errorf("adding bridge of network %s: %w", id, err)
		}
		br, err = h.LinkByName(Bridge)
	}
	if err != nil {
		return Info{}, fmt.Errorf("finding bridge of network %s: %w", id, err)
	}
	if err := setOnlyAddr(h, br, gateway); err != nil {
		return Info{}, fmt.Errorf("addressing bridge of network %s: %w", id, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return Info{}, fmt.Errorf("setting bridge of network %s up: %w", id, err)
	}
	if m.uplink != "" {
		if err := m.ensureEgress(id, ns, h, wgPort); err != nil {
			return Info{}, fmt.Errorf("egress of network %s: %w", id, err)
		}
	}
	if wg != nil {
		port := Port{Port: wgPort, ContainerPort: wgPort, Protocol: "udp"}
		if err := m.publishLocked(id, wgOwner(id), nil, []Port{port}); err != nil {
			return Info{}, fmt.Errorf("publishing the wireguard port of network %s: %w", id, err)
		}
		if err := m.ensureWireGuard(id, ns, h, gateway.IP, wg); err != nil {
			return Info{}, fmt.Errorf("wireguard of network %s: %w", id, err)
		}
	}
	m.log.Debug().Str("network", id).Str("gateway", gateway.String()).Msg("network provisioned")
	return Info{NetworkID: id, Namespace: name, Gateway: gateway.String()}, nil
}

// Inspect checks that network id exists with its bridge up and addressed.
// It returns an error wrapping provision.ErrVanished when it does not.
func (m *Manager) Inspect(ctx context.Context, id string) error {
	return m.InspectWith(ctx, id, false)
}

// InspectWith is Inspect that also checks, when wireguard is set, that
// the network's WireGuard device answers (a killed helper is vanished).
func (m *Manager) InspectWith(ctx context.Context, id string, wireguard bool) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, _, err := m.subnet(id)
	if err == nil && m.uplink != "" {
		err = m.inspectUplink(id)
	}
	if err == nil && wireguard {
		err = inspectWireGuard(id)
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrBroken) {
		return fmt.Errorf("inspecting network %s: %w: %w", id, provision.ErrVanished, err)
	}
	return err
}

func (m *Manager) inspectUplink(id string) error {
	ns, err := m.open(Namespace(id))
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("opening netlink in network %s: %w", id, err)
	}
	defer h.Close()
	return m.inspectEgress(id, h)
}

// Decommission removes network id. It refuses with a temporary error
// wrapping ErrBusy while containers are attached; an absent network is
// success.
func (m *Manager) Decommission(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	name := Namespace(id)
	if err := m.unpublish(wgOwner(id)); err != nil {
		return fmt.Errorf("decommissioning network %s: %w", id, err)
	}
	ns, err := m.open(name)
	if errors.Is(err, ErrNotFound) {
		if err := removeUplink(id); err != nil {
			return err
		}
		return m.deleteNamed(name)
	}
	if err != nil {
		return fmt.Errorf("opening network %s: %w", id, err)
	}
	ports, err := m.listPorts(ns)
	if err != nil {
		ns.Close()
		return fmt.Errorf("listing ports of network %s: %w", id, err)
	}
	var busy []string
	for _, p := range ports {
		if !p.stale {
			busy = append(busy, p.name)
		}
	}
	if len(busy) > 0 {
		ns.Close()
		return provision.Temporary(fmt.Errorf("decommissioning network %s: %w: %s", id, ErrBusy, strings.Join(busy, ", ")))
	}
	err = removeWireGuard(ns, id)
	ns.Close()
	if err != nil {
		return fmt.Errorf("removing the wireguard device of network %s: %w", id, err)
	}
	if err := removeUplink(id); err != nil {
		return fmt.Errorf("decommissioning network %s: %w", id, err)
	}
	if err := m.deleteNamed(name); err != nil {
		return fmt.Errorf("deleting namespace of network %s: %w", id, err)
	}
	m.log.Debug().Str("network", id).Msg("network decommissioned")
	return nil
}

// Check verifies, without changing anything, that container containerID
// may join network id with ip: the network exists (a temporary error
// wrapping ErrNotFound otherwise), ip is a host address of its subnet other
// than the gateway (ErrIPOutside) and no other container holds ip
// (ErrIPInUse); both are permanent.
func (m *Manager) Check(ctx context.Context, id, containerID string, ip net.IP) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := checkContainerID(containerID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err := m.check(id, containerID, ip)
	return err
}

// check is Check without the lock; it returns the gateway.
func (m *Manager) check(id, containerID string, ip net.IP) (*net.IPNet, error) {
	gw, ports, err := m.subnet(id)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrBroken) {
		return nil, provision.Temporary(fmt.Errorf("network %s: %w", id, err))
	}
	if err != nil {
		return nil, err
	}
	ip4 := ip.To4()
	if ip4 == nil || !gw.Contains(ip4) || ip4.Equal(gw.IP) || ip4.Equal(gw.IP.Mask(gw.Mask)) || ip4.Equal(broadcast(gw)) {
		return nil, provision.Permanent(fmt.Errorf("%w: %s is not a free host address of %s", ErrIPOutside, ip, gw))
	}
	for _, p := range ports {
		if !p.stale && p.container != containerID && p.ip.Equal(ip4) {
			return nil, provision.Permanent(fmt.Errorf("%w: %s is held by container %s", ErrIPInUse, ip, p.container))
		}
	}
	return gw, nil
}

// Attach joins container containerID to network id with ip: it creates (or
// completes) the container's namespace and its veth pair, and returns the
// path of the container's namespace. It checks as Check does first and is
// idempotent; a port of the container with another IP is replaced.
func (m *Manager) Attach(ctx context.Context, id, containerID string, ip net.IP) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	if err := checkContainerID(containerID); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	gw, err := m.check(id, containerID, ip)
	if err != nil {
		return "", err
	}
	nns, err := m.open(Namespace(id))
	if err != nil {
		return "", fmt.Errorf("opening network %s: %w", id, err)
	}
	defer nns.Close()
	cname := ContainerNamespace(containerID)
	cns, err := m.ensureNamespace(cname)
	if err != nil {
		return "", fmt.Errorf("creating namespace of container %s: %w", containerID, err)
	}
	defer cns.Close()
	nh, err := netlink.NewHandleAt(nns, unix.NETLINK_ROUTE)
	if err != nil {
		return "", fmt.Errorf("opening netlink in network %s: %w", id, err)
	}
	defer nh.Close()
	ch, err := netlink.NewHandleAt(cns, unix.NETLINK_ROUTE)
	if err != nil {
		return "", fmt.Errorf("opening netlink in container %s: %w", containerID, err)
	}
	defer ch.Close()
	if err := m.ensurePort(nh, ch, cns, containerID, ip); err != nil {
		return "", fmt.Errorf("attaching container %s to network %s: %w", containerID, id, err)
	}
	if err := configureContainer(ch, &net.IPNet{IP: ip.To4(), Mask: gw.Mask}, gw.IP); err != nil {
		return "", fmt.Errorf("configuring container %s in network %s: %w", containerID, id, err)
	}
	m.log.Debug().Str("network", id).Str("container", containerID).Str("ip", ip.String()).Msg("container attached")
	return m.NamespacePath(cname), nil
}

func (m *Manager) ensurePort(nh, ch *netlink.Handle, cns netns.NsHandle, containerID string, ip net.IP) error {
	alias := portAlias(containerID, ip)
	portName := PortName(containerID)
	br, err := nh.LinkByName(Bridge)
	if err != nil {
		return fmt.Errorf("finding bridge: %w", err)
	}
	port, err := nh.LinkByName(portName)
	switch {
	case err == nil:
		_, errPeer := ch.LinkByName(ContainerLink)
		if port.Attrs().Alias != alias || errPeer != nil {
			// A port of an older spec, or half of a pair: start again.
			if err := delLink(nh, port); err != nil {
				return fmt.Errorf("deleting stale port %s: %w", portName, err)
			}
			port = nil
		}
	case isNotFound(err):
		port = nil
	default:
		return fmt.Errorf("finding port %s: %w", portName, err)
	}
	if port == nil {
		if old, err := ch.LinkByName(ContainerLink); err == nil {
			if err := delLink(ch, old); err != nil {
				return fmt.Errorf("deleting stale %s: %w", ContainerLink, err)
			}
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: portName, MasterIndex: br.Attrs().Index, Alias: alias},
			PeerName:      ContainerLink,
			PeerNamespace: netlink.NsFd(cns),
		}
		if err := nh.LinkAdd(veth); err != nil {
			return fmt.Errorf("adding veth %s: %w", portName, err)
		}
		if port, err = nh.LinkByName(portName); err != nil {
			return fmt.Errorf("finding new port %s: %w", portName, err)
		}
		if port.Attrs().Alias != alias { // kernels that ignore the alias on creation
			if err := nh.LinkSetAlias(port, alias); err != nil {
				return fmt.Errorf("labelling port %s: %w", portName, err)
			}
		}
	}
	if port.Attrs().MasterIndex != br.Attrs().Index {
		if err := nh.LinkSetMaster(port, br); err != nil {
			return fmt.Errorf("enslaving port %s: %w", portName, err)
		}
	}
	if err := nh.LinkSetUp(port); err != nil {
		return fmt.Errorf("setting port %s up: %w", portName, err)
	}
	return nil
}

func configureContainer(ch *netlink.Handle, addr *net.IPNet, gw net.IP) error {
	if err := loUp(ch); err != nil {
		return err
	}
	eth, err := ch.LinkByName(ContainerLink)
	if err != nil {
		return fmt.Errorf("finding %s: %w", ContainerLink, err)
	}
	if err := setOnlyAddr(ch, eth, addr); err != nil {
		return err
	}
	if err := ch.LinkSetUp(eth); err != nil {
		return fmt.Errorf("setting %s up: %w", ContainerLink, err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
	if err := ch.RouteReplace(route); err != nil {
		return fmt.Errorf("adding default route via %s: %w", gw, err)
	}
	return nil
}

// Detach removes container containerID's namespace: its eth0 goes down at
// once and the kernel destroys the veth pair with the namespace, which the
// network then treats as gone (its IP is free, it does not keep the network
// busy). The container's processes must be gone. An absent attachment is
// success.
func (m *Manager) Detach(ctx context.Context, containerID string) error {
	if err := checkContainerID(containerID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.unpublish(containerID); err != nil {
		return err
	}
	name := ContainerNamespace(containerID)
	cns, err := m.open(name)
	if err == nil {
		err = downLink(cns, ContainerLink)
		cns.Close()
		if err != nil {
			return fmt.Errorf("detaching container %s: %w", containerID, err)
		}
	} else if !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("opening namespace of container %s: %w", containerID, err)
	}
	if err := m.deleteNamed(name); err != nil {
		return fmt.Errorf("deleting namespace of container %s: %w", containerID, err)
	}
	return nil
}

// Networks returns the ids of the networks whose namespace or link to
// the node exists.
func (m *Manager) Networks(ctx context.Context) ([]string, error) {
	var ids []string
	err := m.eachNamespace(ctx, func(name string) {
		if id, ok := strings.CutPrefix(name, provision.Prefix); ok && networkIDRe.MatchString(id) {
			ids = append(ids, id)
		}
	})
	if err != nil || m.uplink == "" {
		return ids, err
	}
	node, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink on the node: %w", err)
	}
	defer node.Close()
	links, err := uplinks(node)
	if err != nil {
		return nil, err
	}
	for id := range links {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Containers returns the ids of the containers whose namespace exists or
// that hold a published port.
func (m *Manager) Containers(ctx context.Context) ([]string, error) {
	var ids []string
	err := m.eachNamespace(ctx, func(name string) {
		if id, ok := strings.CutPrefix(name, containerNSPrefix); ok && provision.ValidName("id", id) == nil {
			ids = append(ids, id)
		}
	})
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	ports, err := m.publishedPorts()
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	for _, c := range ports {
		if strings.HasPrefix(c, "wg.") { // a network's wireguard port
			continue
		}
		if !slices.Contains(ids, c) && provision.ValidName("id", c) == nil {
			ids = append(ids, c)
		}
	}
	return ids, nil
}

func (m *Manager) eachNamespace(ctx context.Context, fn func(name string)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := os.ReadDir(m.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing namespaces: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), provision.Prefix) {
			fn(e.Name())
		}
	}
	return nil
}

type port struct {
	name      string
	container string
	ip        net.IP
	// stale is set when the container's namespace is gone: Detach only
	// unmounts it, and the kernel destroys the pair with it, shortly.
	stale bool
}

// subnet returns the gateway (with the subnet's mask) and the ports of
// network id.
func (m *Manager) subnet(id string) (*net.IPNet, []port, error) {
	ns, err := m.open(Namespace(id))
	if err != nil {
		return nil, nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("opening netlink in network %s: %w", id, err)
	}
	defer h.Close()
	br, err := h.LinkByName(Bridge)
	if isNotFound(err) {
		return nil, nil, fmt.Errorf("%w: no bridge", ErrBroken)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("finding bridge of network %s: %w", id, err)
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		return nil, nil, fmt.Errorf("%w: bridge down", ErrBroken)
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return nil, nil, fmt.Errorf("listing addresses of network %s: %w", id, err)
	}
	if len(addrs) == 0 {
		return nil, nil, fmt.Errorf("%w: bridge has no address", ErrBroken)
	}
	ports, err := m.portsOf(h)
	if err != nil {
		return nil, nil, err
	}
	return addrs[0].IPNet, ports, nil
}

func (m *Manager) listPorts(ns netns.NsHandle) ([]port, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return m.portsOf(h)
}

// portsOf returns the veth links of a network namespace, with the
// container and IP their alias records. A port without alias (a crash
// between creating and labelling it) is never stale: its container is
// unknown.
func (m *Manager) portsOf(h *netlink.Handle) ([]port, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var ports []port
	for _, l := range links {
		if l.Type() != "veth" || l.Attrs().Name == UplinkLink {
			continue
		}
		p := port{name: l.Attrs().Name}
		if c, ip, ok := parseAlias(l.Attrs().Alias); ok {
			p.container, p.ip = c, ip
			live, err := mounted(m.NamespacePath(ContainerNamespace(c)))
			if err != nil {
				return nil, fmt.Errorf("checking namespace of container %s: %w", c, err)
			}
			p.stale = !live
		}
		ports = append(ports, p)
	}
	return ports, nil
}

func portAlias(containerID string, ip net.IP) string {
	return provision.Prefix + containerID + " " + ip.To4().String()
}

func parseAlias(alias string) (string, net.IP, bool) {
	rest, ok := strings.CutPrefix(alias, provision.Prefix)
	if !ok {
		return "", nil, false
	}
	c, ipText, ok := strings.Cut(rest, " ")
	ip := net.ParseIP(ipText).To4()
	if !ok || ip == nil {
		return "", nil, false
	}
	return c, ip, true
}

func broadcast(n *net.IPNet) net.IP {
	ip := n.IP.Mask(n.Mask).To4()
	b := make(net.IP, 4)
	for i := range b {
		b[i] = ip[i] | ^n.Mask[i]
	}
	return b
}

func loUp(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("setting lo up: %w", err)
	}
	return nil
}

// setOnlyAddr gives link addr as its only IPv4 address.
func setOnlyAddr(h *netlink.Handle, link netlink.Link, addr *net.IPNet) error {
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IP.Equal(addr.IP) && a.Mask.String() == addr.Mask.String() {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("removing %s from %s: %w", a.IPNet, link.Attrs().Name, err)
		}
	}
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: addr}); err != nil {
		return fmt.Errorf("adding %s to %s: %w", addr, link.Attrs().Name, err)
	}
	return nil
}

// downLink sets a link down, so that it stops answering for its address
// at once; deleting a veth waits for RCU grace periods (tens of
// milliseconds), while the kernel destroys it with its namespace anyway.
func downLink(ns netns.NsHandle, name string) error {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finding %s: %w", name, err)
	}
	if err := h.LinkSetDown(l); err != nil {
		return fmt.Errorf("setting %s down: %w", name, err)
	}
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// delLink deletes l through h. A link that is already gone is not an
// error: the kernel removes a veth whose peer's namespace is torn down,
// and it does so asynchronously, so a link found a moment ago may be gone
// by the time it is deleted (ENODEV).
func delLink(h *netlink.Handle, l netlink.Link) error {
	if err := h.LinkDel(l); err != nil && !isNotFound(err) && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// nodeHandle is a netlink handle in the daemon's own namespace.
var nodeHandle = &netlink.Handle{}

// mounted reports whether path is a bind mount of a namespace.
func mounted(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

// open returns a handle to the named namespace, or ErrNotFound.
func (m *Manager) open(name string) (netns.NsHandle, error) {
	p := m.NamespacePath(name)
	ok, err := mounted(p)
	if err != nil {
		return netns.None(), fmt.Errorf("checking namespace %s: %w", name, err)
	}
	if !ok {
		return netns.None(), fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	ns, err := netns.GetFromPath(p)
	if err != nil {
		return netns.None(), fmt.Errorf("opening namespace %s: %w", name, err)
	}
	return ns, nil
}

// ensureNamespace returns a handle to the named namespace, creating it if
// needed. A file left by an interrupted creation is replaced.
func (m *Manager) ensureNamespace(name string) (netns.NsHandle, error) {
	ns, err := m.open(name)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return ns, err
	}
	p := m.NamespacePath(name)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return netns.None(), fmt.Errorf("removing stale %s: %w", p, err)
	}
	if err := m.sharedDir(); err != nil {
		return netns.None(), err
	}
	if err := newNamed(p); err != nil {
		return netns.None(), err
	}
	return m.open(name)
}

// sharedDir makes the namespace directory a shared mount point of its own,
// as iproute2 does before its first `ip netns add`: namespaces mounted
// before iproute2 covered the directory with its own bind mount would be
// hidden from it (and it from us) otherwise.
func (m *Manager) sharedDir() error {
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", m.dir, err)
	}
	err := unix.Mount("", m.dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(m.dir, m.dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mounting %s on itself: %w", m.dir, err)
		}
		err = unix.Mount("", m.dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("making %s shared: %w", m.dir, err)
	}
	return nil
}

// newNamed creates a network namespace bind-mounted at path. It runs on a
// locked thread of its own: the thread unshares into the new namespace,
// bind-mounts it and switches back; if switching back fails the thread is
// left locked, so the runtime terminates it instead of reusing it.
func newNamed(path string) error {
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
		err = createNamed(path)
		if serr := netns.Set(orig); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("switching back to the host namespace: %w", serr))
			return // thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

func createNamed(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	f.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		os.Remove(path)
		return fmt.Errorf("unsharing network namespace: %w", err)
	}
	self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
	if err := unix.Mount(self, path, "", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("bind-mounting namespace at %s: %w", path, err)
	}
	return nil
}

// deleteNamed unmounts and removes the named namespace; absent is success.
func (m *Manager) deleteNamed(name string) error {
	p := m.NamespacePath(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	return nil
}
