package provision

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path"
	"reflect"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/edgeprov/provisiond/internal/strictjson"
)

// Limits on workload specifications.
const (
	// MaxVolumeSize is the largest volume, in GiB.
	MaxVolumeSize = 64 << 10
	// MinContainerMemory is the smallest container memory limit, in MiB.
	MinContainerMemory = 16
	// MaxContainerMemory is the largest container memory limit, in MiB (4 TiB).
	MaxContainerMemory = 4 << 20
	// MaxContainerCPU is the largest number of cores a container may ask for.
	MaxContainerCPU = 1024
	// MaxContainerDisk is the largest container root disk, in MiB (16 TiB).
	MaxContainerDisk = 16 << 20
	// MaxNameLength is the longest name (network names, ids).
	MaxNameLength = 64
	// MaxPublishedPorts is the most ports one container may publish.
	MaxPublishedPorts = 16
)

// DiskType is the kind of storage a volume lives on.
type DiskType string

// The disk types.
const (
	SSD DiskType = "ssd"
	HDD DiskType = "hdd"
)

// Network is the Data of a network reservation.
type Network struct {
	// Name is the user's name for the network; with the user it gives NetworkID.
	Name string `json:"name"`
	// IPRange is the whole range of the network (IPv4 CIDR).
	IPRange string `json:"ip_range"`
	// Subnet is this node's part of IPRange (IPv4 CIDR); its first host address is the gateway.
	Subnet string `json:"subnet"`
	// WireGuard joins this node's part of the network to the other nodes'
	// parts and to the owner's access peers. Default nil: the network is
	// local to the node.
	WireGuard *WireGuard `json:"wireguard,omitempty"`
}

// Limits of a network's WireGuard interface.
const (
	// MaxPeers is the most peers one network reservation may list.
	MaxPeers = 64
	// MaxAllowedIPs is the most allowed-IPs ranges of one peer.
	MaxAllowedIPs = 16
	// maxSealedKey bounds the sealed private key's text (a 32-byte key
	// sealed to the node is 80 bytes, 108 in base64).
	maxSealedKey = 256
)

// WireGuard is a network's WireGuard interface on one node.
type WireGuard struct {
	// PrivateKey is the interface's private key sealed to the node (an
	// anonymous NaCl box to the node's X25519 key, base64): only the node
	// can read it, never the explorer.
	PrivateKey string `json:"private_key"`
	// ListenPort is the UDP port the node publishes for its peers (an
	// exclusive node port, like a container's published port).
	ListenPort int `json:"listen_port"`
	// Peers are the other nodes of the network and the owner's access
	// peers.
	Peers []WireGuardPeer `json:"peers,omitempty"`
}

// WireGuardPeer is a peer of a network's WireGuard interface.
type WireGuardPeer struct {
	// PublicKey is the peer's curve25519 public key (base64 of 32 bytes).
	PublicKey string `json:"public_key"`
	// Endpoint is the peer's public IPv4 address and port ("IP:port");
	// empty for a peer without public address, which connects to us.
	Endpoint string `json:"endpoint,omitempty"`
	// AllowedIPs are the IPv4 ranges (inside the network's ip_range)
	// routed to the peer and accepted from it.
	AllowedIPs []string `json:"allowed_ips"`
}

// Volume is the Data of a volume reservation.
type Volume struct {
	// Size is the volume size in GiB.
	Size int64 `json:"size"`
	// Type is ssd or hdd.
	Type DiskType `json:"type"`
}

// Mount binds a volume of the same user into a container.
type Mount struct {
	// VolumeID is the ID of the volume reservation.
	VolumeID string `json:"volume_id"`
	// Mountpoint is the absolute path inside the container.
	Mountpoint string `json:"mountpoint"`
}

// ContainerNetwork attaches a container to a network of the same user.
type ContainerNetwork struct {
	// NetworkID is NetworkID(user, name) of the network.
	NetworkID string `json:"network_id"`
	// IP is the container's IPv4 address inside the network's subnet.
	IP string `json:"ip"`
}

// ContainerCapacity is what a container may use.
type ContainerCapacity struct {
	// CPU is the number of cores.
	CPU int64 `json:"cpu"`
	// Memory is the memory limit in MiB.
	Memory int64 `json:"memory"`
	// DiskSize is the root disk size in MiB.
	DiskSize int64 `json:"disk_size"`
}

// Container is the Data of a container reservation.
type Container struct {
	// Image is a rootfs tarball (a local path or an http(s) URL) or an
	// OCI image in a registry pinned by digest,
	// REGISTRY/REPOSITORY@sha256:HEX (see ParseImageRef).
	Image string `json:"image"`
	// ImageDigest is the sha256 of the tarball, hex encoded. For a
	// registry image it may be empty; when given it must be the
	// reference's digest.
	ImageDigest string `json:"image_digest"`
	// Entrypoint is the command and its arguments.
	Entrypoint []string `json:"entrypoint"`
	// Env is the environment of the process.
	Env map[string]string `json:"env,omitempty"`
	// Mounts are volumes of the same user bound into the container.
	Mounts []Mount `json:"mounts,omitempty"`
	// Network attaches the container to a network of the same user.
	Network ContainerNetwork `json:"network"`
	// Capacity is the CPU, memory and root disk the container may use.
	Capacity ContainerCapacity `json:"capacity"`
	// Publish are ports of the node's public address forwarded to the
	// container (it needs a network). Default none.
	Publish []PublishedPort `json:"publish,omitempty"`
}

// PublishedPort forwards a port of the node's public address to a port of
// a container. A node port is an exclusive node resource: one container
// at a time holds it.
type PublishedPort struct {
	// Port is the port on the node's public address, 1 to 65535.
	Port int `json:"port"`
	// ContainerPort is the port the container listens on, 1 to 65535.
	ContainerPort int `json:"container_port"`
	// Protocol is "tcp" or "udp".
	Protocol string `json:"protocol"`
}

// String returns the port in the form ParsePort reads.
func (p PublishedPort) String() string {
	return fmt.Sprintf("%d:%d/%s", p.Port, p.ContainerPort, p.Protocol)
}

// Validate checks the port numbers and the protocol.
func (p PublishedPort) Validate() error {
	switch {
	case p.Port < 1 || p.Port > 65535:
		return fmt.Errorf("%w: published port %d is not between 1 and 65535", ErrBadField, p.Port)
	case p.ContainerPort < 1 || p.ContainerPort > 65535:
		return fmt.Errorf("%w: container port %d is not between 1 and 65535", ErrBadField, p.ContainerPort)
	case p.Protocol != "tcp" && p.Protocol != "udp":
		return fmt.Errorf("%w: protocol %q is not tcp or udp", ErrBadField, p.Protocol)
	}
	return nil
}

// ParsePort reads "NODE:CONTAINER[/tcp|/udp]" (tcp when the protocol is
// left out), as `provctl reserve container --publish` takes it.
func ParsePort(s string) (PublishedPort, error) {
	spec, proto, hasProto := strings.Cut(s, "/")
	if !hasProto {
		proto = "tcp"
	}
	node, ctr, ok := strings.Cut(spec, ":")
	if !ok || len(s) > 32 {
		return PublishedPort{}, fmt.Errorf("%w: published port %q is not NODE:CONTAINER[/tcp|/udp]", ErrBadField, s)
	}
	p := PublishedPort{Protocol: proto}
	var err error
	if p.Port, err = parsePortNumber(node); err != nil {
		return PublishedPort{}, fmt.Errorf("%w: published port %q: node port: %v", ErrBadField, s, err)
	}
	if p.ContainerPort, err = parsePortNumber(ctr); err != nil {
		return PublishedPort{}, fmt.Errorf("%w: published port %q: container port: %v", ErrBadField, s, err)
	}
	if err := p.Validate(); err != nil {
		return PublishedPort{}, err
	}
	return p, nil
}

// parsePortNumber reads 1 to 5 decimal digits.
func parsePortNumber(s string) (int, error) {
	if s == "" || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a number of 1 to 5 digits", s)
	}
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n, nil
}

var (
	nameRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	envKeyRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hexRe    = regexp.MustCompile(`^[0-9a-f]+$`)
)

// ValidName checks a name that ends up in paths or object names: 1 to
// MaxNameLength characters of letters, digits, '.', '_' and '-', starting
// with a letter or digit, so that no path separator and no ".." can occur.
func ValidName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: %s is empty", ErrBadName, what)
	case len(name) > MaxNameLength:
		return fmt.Errorf("%w: %s is longer than %d characters", ErrBadName, what, MaxNameLength)
	case strings.Contains(name, ".."), strings.ContainsAny(name, `/\`), !nameRe.MatchString(name):
		return fmt.Errorf("%w: %s %q may hold only letters, digits, '.', '_' and '-' (no path separators, no '..')", ErrBadName, what, name)
	}
	return nil
}

// DecodeData decodes JSON data strictly into v: bytes that are not UTF-8,
// unknown fields, trailing data, a key that occurs twice in an object and a
// field name spelt in another case than the field's JSON name are errors
// wrapping ErrBadData. Those that other JSON readers would read otherwise
// than encoding/json does (not UTF-8, a key twice, a name in another case)
// also wrap ErrAmbiguousJSON. Keys of maps may differ only in case. It is the one
// rule of the node (a reservation's data) and of the explorer (every
// request body): encoding/json would silently turn invalid UTF-8 into
// U+FFFD, let the last of duplicate keys win and match names in any case.
func DecodeData(data []byte, v any) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: %w: not valid UTF-8 (at byte %d)", ErrBadData, ErrAmbiguousJSON, firstInvalid(data))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadData, err)
	}
	// dec.More is false before a stray '}' or ']', so ask for the next
	// token: only the end of input is acceptable.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrBadData)
	}
	if err := strictjson.Check(data, reflect.TypeOf(v)); err != nil {
		return fmt.Errorf("%w: %w: %v", ErrBadData, ErrAmbiguousJSON, err)
	}
	return nil
}

// firstInvalid returns the offset of the first byte of data that is not
// part of valid UTF-8.
func firstInvalid(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(data)
}

// Workload decodes and validates the reservation's Data into the struct of
// its type: *Network, *Volume or *Container.
func (r *Reservation) Workload() (any, error) {
	var w interface{ Validate() error }
	switch r.Type {
	case NetworkReservation:
		w = new(Network)
	case VolumeReservation:
		w = new(Volume)
	case ContainerReservation:
		w = new(Container)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, r.Type)
	}
	if err := DecodeData(r.Data, w); err != nil {
		return nil, err
	}
	if err := w.Validate(); err != nil {
		return nil, err
	}
	return w, nil
}

func parseV4Net(what, s string) (*net.IPNet, error) {
	ip, n, err := net.ParseCIDR(s)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("%w: %s %q is not an IPv4 CIDR", ErrBadField, what, s)
	}
	if !ip.Equal(n.IP) {
		return nil, fmt.Errorf("%w: %s %q has host bits set", ErrBadField, what, s)
	}
	return n, nil
}

// Validate checks the network's name and that Subnet is an IPv4 network
// inside IPRange with room for a gateway and at least one host.
func (n *Network) Validate() error {
	if err := ValidName("network name", n.Name); err != nil {
		return err
	}
	rng, err := parseV4Net("ip_range", n.IPRange)
	if err != nil {
		return err
	}
	sub, err := parseV4Net("subnet", n.Subnet)
	if err != nil {
		return err
	}
	rOnes, _ := rng.Mask.Size()
	sOnes, _ := sub.Mask.Size()
	if sOnes < rOnes || !rng.Contains(sub.IP) {
		return fmt.Errorf("%w: subnet %s is not inside ip_range %s", ErrBadField, n.Subnet, n.IPRange)
	}
	if sOnes > 30 {
		return fmt.Errorf("%w: subnet %s is smaller than a /30", ErrBadField, n.Subnet)
	}
	if n.WireGuard != nil {
		return n.WireGuard.validate(rng, sub)
	}
	return nil
}

// validate checks the WireGuard interface of a network of range rng whose
// subnet on this node is sub.
func (w *WireGuard) validate(rng, sub *net.IPNet) error {
	if w.PrivateKey == "" || len(w.PrivateKey) > maxSealedKey {
		return fmt.Errorf("%w: wireguard private_key must be a sealed key of 1 to %d characters", ErrBadField, maxSealedKey)
	}
	if _, err := base64.StdEncoding.DecodeString(w.PrivateKey); err != nil {
		return fmt.Errorf("%w: wireguard private_key is not base64", ErrBadField)
	}
	if w.ListenPort < 1 || w.ListenPort > 65535 {
		return fmt.Errorf("%w: wireguard listen_port %d is not between 1 and 65535", ErrBadField, w.ListenPort)
	}
	if len(w.Peers) > MaxPeers {
		return fmt.Errorf("%w: %d wireguard peers, at most %d", ErrBadField, len(w.Peers), MaxPeers)
	}
	keys := map[string]bool{}
	var routed []*net.IPNet
	for i, p := range w.Peers {
		if _, err := ParseWireGuardKey(p.PublicKey); err != nil {
			return fmt.Errorf("peer %d: %w", i, err)
		}
		if keys[p.PublicKey] {
			return fmt.Errorf("%w: peer %d: public key listed twice", ErrBadField, i)
		}
		keys[p.PublicKey] = true
		if p.Endpoint != "" {
			ap, err := netip.ParseAddrPort(p.Endpoint)
			if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
				return fmt.Errorf("%w: peer %d: endpoint %q is not IPv4:port", ErrBadField, i, p.Endpoint)
			}
		}
		if len(p.AllowedIPs) == 0 || len(p.AllowedIPs) > MaxAllowedIPs {
			return fmt.Errorf("%w: peer %d: 1 to %d allowed_ips", ErrBadField, i, MaxAllowedIPs)
		}
		for _, a := range p.AllowedIPs {
			n, err := parseV4Net("allowed_ips", a)
			if err != nil {
				return fmt.Errorf("peer %d: %w", i, err)
			}
			if !netWithin(n, rng) {
				return fmt.Errorf("%w: peer %d: allowed_ips %s is not inside ip_range %s (it would take another network's traffic)", ErrBadField, i, a, rng)
			}
			if overlaps(n, sub) {
				return fmt.Errorf("%w: peer %d: allowed_ips %s overlaps this node's subnet %s", ErrBadField, i, a, sub)
			}
			for _, r := range routed {
				if overlaps(n, r) {
					return fmt.Errorf("%w: peer %d: allowed_ips %s overlaps %s of another peer", ErrBadField, i, a, r)
				}
			}
			routed = append(routed, n)
		}
	}
	return nil
}

// ParseWireGuardKey reads a curve25519 key: base64 of 32 bytes, not all
// zero.
func ParseWireGuardKey(s string) ([32]byte, error) {
	var k [32]byte
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return k, fmt.Errorf("%w: %q is not a curve25519 key (base64 of 32 bytes)", ErrBadField, s)
	}
	copy(k[:], b)
	if k == [32]byte{} {
		return k, fmt.Errorf("%w: the all-zero curve25519 key", ErrBadField)
	}
	return k, nil
}

// netWithin reports whether n lies inside outer.
func netWithin(n, outer *net.IPNet) bool {
	no, _ := n.Mask.Size()
	oo, _ := outer.Mask.Size()
	return no >= oo && outer.Contains(n.IP)
}

// overlaps reports whether two networks share an address.
func overlaps(a, b *net.IPNet) bool { return a.Contains(b.IP) || b.Contains(a.IP) }

// Gateway returns the subnet's gateway address (its first host) with the
// subnet's mask. The network must be valid.
func (n *Network) Gateway() *net.IPNet {
	_, sub, _ := net.ParseCIDR(n.Subnet)
	gw := make(net.IP, 4)
	copy(gw, sub.IP.To4())
	gw[3]++
	return &net.IPNet{IP: gw, Mask: sub.Mask}
}

// Validate checks the volume's size and type.
func (v *Volume) Validate() error {
	if v.Size <= 0 || v.Size > MaxVolumeSize {
		return fmt.Errorf("%w: volume size %d GiB is not between 1 and %d", ErrBadSize, v.Size, MaxVolumeSize)
	}
	if v.Type != SSD && v.Type != HDD {
		return fmt.Errorf("%w: volume type %q is not ssd or hdd", ErrBadField, v.Type)
	}
	return nil
}

// IsImageURL tells whether a container image names an http(s) URL;
// otherwise it is a path on the node.
func IsImageURL(image string) bool {
	return strings.HasPrefix(image, "http://") || strings.HasPrefix(image, "https://")
}

// Validate checks the container's image, entrypoint, environment, mounts,
// network and capacity. Whether referenced volumes and networks exist and
// belong to the same user is checked by the engine and the primitives.
func (c *Container) Validate() error {
	if c.Image == "" {
		return fmt.Errorf("%w: container image is empty", ErrBadField)
	}
	d := strings.TrimPrefix(c.ImageDigest, "sha256:")
	switch {
	case IsImageURL(c.Image):
		if strings.ContainsAny(c.Image, " \n\r\t") {
			return fmt.Errorf("%w: container image URL holds whitespace", ErrBadField)
		}
	case IsImageRef(c.Image):
		ref, err := ParseImageRef(c.Image)
		if err != nil {
			return fmt.Errorf("container image is neither an http(s) URL, a clean absolute path nor a registry reference: %w", err)
		}
		if c.ImageDigest == "" {
			d = ref.Digest
		} else if d != ref.Digest {
			return fmt.Errorf("%w: image_digest is not the digest of the image reference", ErrBadField)
		}
	case !path.IsAbs(c.Image) || path.Clean(c.Image) != c.Image:
		return fmt.Errorf("%w: container image %q is neither an http(s) URL nor a clean absolute path", ErrBadName, c.Image)
	}
	if len(d) != 64 || !hexRe.MatchString(d) {
		return fmt.Errorf("%w: image_digest is not a lowercase hex sha256", ErrBadField)
	}
	if len(c.Entrypoint) == 0 || c.Entrypoint[0] == "" {
		return fmt.Errorf("%w: container entrypoint is empty", ErrBadField)
	}
	for k := range c.Env {
		if !envKeyRe.MatchString(k) {
			return fmt.Errorf("%w: environment variable name %q", ErrBadName, k)
		}
	}
	seen := map[string]bool{}
	for _, m := range c.Mounts {
		if err := ValidName("mount volume_id", m.VolumeID); err != nil {
			return err
		}
		if !path.IsAbs(m.Mountpoint) || path.Clean(m.Mountpoint) != m.Mountpoint || m.Mountpoint == "/" ||
			strings.Contains(m.Mountpoint, "..") {
			return fmt.Errorf("%w: mountpoint %q must be a clean absolute path other than /", ErrBadName, m.Mountpoint)
		}
		if seen[m.Mountpoint] {
			return fmt.Errorf("%w: mountpoint %q used twice", ErrBadField, m.Mountpoint)
		}
		seen[m.Mountpoint] = true
	}
	if c.Network.NetworkID != "" {
		if len(c.Network.NetworkID) != 16 || !hexRe.MatchString(c.Network.NetworkID) {
			return fmt.Errorf("%w: network_id %q is not a network id", ErrBadName, c.Network.NetworkID)
		}
		if ip := net.ParseIP(c.Network.IP); ip == nil || ip.To4() == nil {
			return fmt.Errorf("%w: container ip %q is not an IPv4 address", ErrBadField, c.Network.IP)
		}
	} else if c.Network.IP != "" {
		return fmt.Errorf("%w: container ip given without network_id", ErrBadField)
	}
	if len(c.Publish) > 0 && c.Network.NetworkID == "" {
		return fmt.Errorf("%w: published ports need a network", ErrBadField)
	}
	if len(c.Publish) > MaxPublishedPorts {
		return fmt.Errorf("%w: %d published ports, at most %d", ErrBadField, len(c.Publish), MaxPublishedPorts)
	}
	ports := map[string]bool{}
	for _, p := range c.Publish {
		if err := p.Validate(); err != nil {
			return err
		}
		k := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if ports[k] {
			return fmt.Errorf("%w: port %s published twice", ErrBadField, k)
		}
		ports[k] = true
	}
	switch {
	case c.Capacity.CPU <= 0 || c.Capacity.CPU > MaxContainerCPU:
		return fmt.Errorf("%w: container cpu %d is not between 1 and %d", ErrBadField, c.Capacity.CPU, MaxContainerCPU)
	case c.Capacity.Memory < MinContainerMemory || c.Capacity.Memory > MaxContainerMemory:
		return fmt.Errorf("%w: container memory %d MiB is not between %d and %d", ErrBadSize, c.Capacity.Memory, MinContainerMemory, MaxContainerMemory)
	case c.Capacity.DiskSize < 0 || c.Capacity.DiskSize > MaxContainerDisk:
		return fmt.Errorf("%w: container disk_size %d MiB is not between 0 and %d", ErrBadSize, c.Capacity.DiskSize, MaxContainerDisk)
	}
	return nil
}

// ImageSHA256 returns the image digest without an optional "sha256:"
// prefix: for a registry image, the digest of its reference.
func (c *Container) ImageSHA256() string {
	if c.ImageDigest == "" && IsImageRef(c.Image) {
		if ref, err := ParseImageRef(c.Image); err == nil {
			return ref.Digest
		}
	}
	return strings.TrimPrefix(c.ImageDigest, "sha256:")
}

// Dependencies returns the volume reservation IDs and the network ID the
// container needs deployed before it can start.
func (c *Container) Dependencies() (volumes []string, networkID string) {
	for _, m := range c.Mounts {
		volumes = append(volumes, m.VolumeID)
	}
	return volumes, c.Network.NetworkID
}

// isHex reports whether s is lowercase hex of n characters.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && hexRe.MatchString(s)
}
