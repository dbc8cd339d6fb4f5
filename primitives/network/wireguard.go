package network

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/edgeprov/provisiond/provision"
)

// WireGuard networks.
//
// A network with a WireGuard spec has an interface "prv-w<10 hex of the
// network id>" inside its namespace, served by a helper process of its own
// (Options.WireGuardHelper, `provisiond wireguard`) started inside the
// namespace: the device outlives a daemon restart or kill -9, and the
// daemon finds it again through its UAPI socket. The network's range is
// routed to the interface (the node's own subnet, more specific, stays on
// the bridge). The listen port is published on the uplink like a
// container's port (owner "wg.<network id>"), and the network's table
// accepts it from its link. Deleting the interface ends the helper.

// Sentinel errors of WireGuard networks.
var (
	ErrNoHelper = errors.New("network: no wireguard helper configured")
	ErrNoDevice = errors.New("network: wireguard device did not come up")
)

// keepalive is sent to peers with an endpoint, so that a node without a
// public address keeps its NAT mapping open to them.
const keepalive = 25 * time.Second

// WireGuardSpec is a network's WireGuard interface as the manager applies
// it (the private key already opened).
type WireGuardSpec struct {
	// PrivateKey is the interface's private key.
	PrivateKey wgtypes.Key
	// ListenPort is its UDP port, published on the node's uplink.
	ListenPort int
	// Peers are its peers.
	Peers []WireGuardPeer
	// Range is the whole network's range, routed to the interface.
	Range *net.IPNet
}

// WireGuardPeer is a peer of a WireGuardSpec.
type WireGuardPeer struct {
	// PublicKey is the peer's key.
	PublicKey wgtypes.Key
	// Endpoint is its public address; nil when it has none.
	Endpoint *net.UDPAddr
	// AllowedIPs are the ranges routed to it.
	AllowedIPs []net.IPNet
}

// WireGuardName returns the interface name of network id's WireGuard
// device (unique on the host: the UAPI directory is shared).
func WireGuardName(id string) string { return provision.Prefix + "w" + id[:10] }

func wgOwner(id string) string { return "wg." + id }

// ensureWireGuard starts (or finds) the device of network id and brings
// its key, port, peers and routes to spec. The caller holds m.mu.
func (m *Manager) ensureWireGuard(id string, nns netns.NsHandle, nh *netlink.Handle, gw net.IP, spec *WireGuardSpec) error {
	name := WireGuardName(id)
	wc, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("opening wgctrl: %w", err)
	}
	defer wc.Close()
	dev, err := wc.Device(name)
	if err != nil {
		if err := m.startHelper(id, nns, nh); err != nil {
			return err
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			if dev, err = wc.Device(name); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return provision.Temporary(fmt.Errorf("%w: %s: %w", ErrNoDevice, name, err))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The key and port are set only when they change: setting the port
	// rebinds the device's socket, which a peer update has no reason to.
	var cfg wgtypes.Config
	if dev.PrivateKey != spec.PrivateKey {
		cfg.PrivateKey = &spec.PrivateKey
	}
	if port := spec.ListenPort; dev.ListenPort != port {
		cfg.ListenPort = &port
	}
	want := map[wgtypes.Key]bool{}
	has := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range dev.Peers {
		has[p.PublicKey] = p
	}
	for _, p := range spec.Peers {
		want[p.PublicKey] = true
		ka := time.Duration(0)
		if p.Endpoint != nil {
			ka = keepalive
		}
		if cur, ok := has[p.PublicKey]; ok && samePeer(cur, p, ka) {
			continue // as it is: not touched at all
		}
		pc := wgtypes.PeerConfig{PublicKey: p.PublicKey, Endpoint: p.Endpoint, ReplaceAllowedIPs: true, AllowedIPs: p.AllowedIPs}
		if p.Endpoint != nil {
			pc.PersistentKeepaliveInterval = &ka
		}
		cfg.Peers = append(cfg.Peers, pc)
	}
	for _, p := range dev.Peers { // removed peers go; the others keep their sessions
		if !want[p.PublicKey] {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
		}
	}
	if err := wc.ConfigureDevice(name, cfg); err != nil {
		return fmt.Errorf("configuring %s: %w", name, err)
	}
	link, err := nh.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s: %w", name, err)
	}
	if err := nh.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: spec.Range, Src: gw}
	if err := nh.RouteReplace(route); err != nil {
		return fmt.Errorf("routing %s to %s: %w", spec.Range, name, err)
	}
	return nil
}

// samePeer reports whether the device's peer cur is already p with the
// keepalive ka: the same allowed IPs (in any order), the same keepalive,
// and p's endpoint when p names one (a peer without one keeps the
// endpoint the device learned).
func samePeer(cur wgtypes.Peer, p WireGuardPeer, ka time.Duration) bool {
	if cur.PersistentKeepaliveInterval != ka || len(cur.AllowedIPs) != len(p.AllowedIPs) {
		return false
	}
	if p.Endpoint != nil && (cur.Endpoint == nil || !cur.Endpoint.IP.Equal(p.Endpoint.IP) || cur.Endpoint.Port != p.Endpoint.Port) {
		return false
	}
	for _, a := range p.AllowedIPs {
		if !slices.ContainsFunc(cur.AllowedIPs, func(b net.IPNet) bool { return a.IP.Equal(b.IP) && sameMask(a.Mask, b.Mask) }) {
			return false
		}
	}
	return true
}

// sameMask reports whether two masks have the same prefix length.
func sameMask(a, b net.IPMask) bool {
	ao, _ := a.Size()
	bo, _ := b.Size()
	return ao == bo
}

// startHelper starts the WireGuard helper of network id inside its
// namespace (the child of a thread inside a namespace is born in it), in
// a session of its own so that signals to the daemon do not reach it.
func (m *Manager) startHelper(id string, nns netns.NsHandle, nh *netlink.Handle) error {
	if len(m.helper) == 0 {
		return provision.Permanentf("network %s: %w", id, ErrNoHelper)
	}
	name := WireGuardName(id)
	if l, err := nh.LinkByName(name); err == nil {
		// A device whose helper is gone (killed): remove its remains.
		if err := delLink(nh, l); err != nil {
			return fmt.Errorf("deleting stale %s: %w", name, err)
		}
	}
	cmd := exec.Command(m.helper[0], append(append([]string{}, m.helper[1:]...), "--interface", name)...)
	if m.helperLogs != "" {
		if err := os.MkdirAll(m.helperLogs, 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(m.helperLogs, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("opening log of %s: %w", name, err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := inNamespace(nns, cmd.Start); err != nil {
		return fmt.Errorf("starting the wireguard helper of network %s: %w", id, err)
	}
	pid := cmd.Process.Pid
	// Reap it when it ends (the network is deleted); it is not stopped
	// with the daemon.
	go func() { _ = cmd.Wait() }()
	m.log.Info().Str("network", id).Int("pid", pid).Msg("wireguard helper started")
	return nil
}

// inspectWireGuard reports a device that does not answer.
func inspectWireGuard(id string) error {
	wc, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("opening wgctrl: %w", err)
	}
	defer wc.Close()
	if _, err := wc.Device(WireGuardName(id)); err != nil {
		return fmt.Errorf("%w: wireguard device %s: %w", ErrBroken, WireGuardName(id), err)
	}
	return nil
}

// removeWireGuard deletes network id's WireGuard interface (its helper
// then exits); absent is success.
func removeWireGuard(nns netns.NsHandle, id string) error {
	h, err := netlink.NewHandleAt(nns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(WireGuardName(id))
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return delLink(h, l)
}
