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
	"net/url"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
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
	// Health is the check that says the container is ready and stays
	// healthy. Default nil: the container is ready once it runs, and only
	// its exit makes it unhealthy.
	Health *HealthCheck `json:"health,omitempty"`
	// Restart says when the node restarts the container after it exited
	// or was killed for failing its health check. Default ""
	// (RestartDefault): as RestartAlways.
	Restart RestartPolicy `json:"restart,omitempty"`
}

// RestartPolicy says when a container that stopped is started again.
type RestartPolicy string

// The restart policies.
const (
	// RestartDefault is the policy of a reservation that names none (every
	// reservation before policies existed): it restarts as RestartAlways,
	// which is what the node always did with a container that stopped.
	RestartDefault RestartPolicy = ""
	// RestartAlways restarts the container whatever its exit code.
	RestartAlways RestartPolicy = "always"
	// RestartOnFailure restarts it unless it exited with code 0.
	RestartOnFailure RestartPolicy = "on-failure"
	// RestartNever leaves it stopped; its status says how it exited.
	RestartNever RestartPolicy = "never"
)

// Restarts reports whether the policy restarts a container that exited
// with code (-1 when unknown; a container killed for failing its health
// check counts as a failure).
func (p RestartPolicy) Restarts(code int) bool {
	switch p {
	case RestartNever:
		return false
	case RestartOnFailure:
		return code != 0
	}
	return true
}

// Defaults and limits of a HealthCheck.
const (
	// DefaultHealthInterval is the time between two checks.
	DefaultHealthInterval = 10
	// DefaultHealthTimeout is how long one check may take.
	DefaultHealthTimeout = 1
	// DefaultHealthFailures is how many checks in a row must fail for a
	// ready container to be unhealthy.
	DefaultHealthFailures = 3
	// DefaultHealthStartPeriod is how long a (re)started container has for
	// its first check to pass.
	DefaultHealthStartPeriod = 60
	// MaxHealthInterval bounds Interval (1 hour).
	MaxHealthInterval = 3600
	// MaxHealthTimeout bounds Timeout.
	MaxHealthTimeout = 60
	// MaxHealthFailures bounds Failures.
	MaxHealthFailures = 100
	// MaxHealthStartPeriod bounds StartPeriod (4 minutes): a first start
	// waits for readiness within one provision operation, which the node
	// bounds by its --op-timeout (5 minutes by default).
	MaxHealthStartPeriod = 240
	// MaxHealthExecArgs bounds the words of Exec, and MaxHealthExecBytes
	// their total length.
	MaxHealthExecArgs  = 32
	MaxHealthExecBytes = 4096
	// MaxHealthHTTPPath bounds HTTPPath.
	MaxHealthHTTPPath = 1024
)

// HealthCheck is how the node checks a container: exactly one of a TCP
// port that accepts a connection, an HTTP path that answers 2xx or 3xx,
// or a command run inside the container that exits 0. TCP and HTTP checks
// connect from inside the container's network namespace to its address
// (127.0.0.1 without a network). Times are whole seconds; zero means the
// default.
type HealthCheck struct {
	// TCPPort is a port that must accept a TCP connection.
	TCPPort int `json:"tcp_port,omitempty"`
	// HTTPPort and HTTPPath name an HTTP GET that must answer 2xx or 3xx;
	// the path starts with '/'.
	HTTPPort int    `json:"http_port,omitempty"`
	HTTPPath string `json:"http_path,omitempty"`
	// Exec is a command (and its arguments) run in the container, as its
	// root, that must exit 0.
	Exec []string `json:"exec,omitempty"`
	// Interval is the time between two checks, in seconds. Default
	// DefaultHealthInterval.
	Interval int `json:"interval,omitempty"`
	// Timeout is how long one check may take, in seconds. Default
	// DefaultHealthTimeout.
	Timeout int `json:"timeout,omitempty"`
	// Failures is how many checks in a row must fail for a ready
	// container to be unhealthy (and restarted by the policy). Default
	// DefaultHealthFailures.
	Failures int `json:"failures,omitempty"`
	// StartPeriod is how long a (re)started container has for its first
	// check to pass, in seconds; failures meanwhile do not count. Default
	// DefaultHealthStartPeriod.
	StartPeriod int `json:"start_period,omitempty"`
}

// IntervalOrDefault returns Interval, or its default.
func (h *HealthCheck) IntervalOrDefault() time.Duration {
	return seconds(h.Interval, DefaultHealthInterval)
}

// TimeoutOrDefault returns Timeout, or its default.
func (h *HealthCheck) TimeoutOrDefault() time.Duration {
	return seconds(h.Timeout, DefaultHealthTimeout)
}

// StartPeriodOrDefault returns StartPeriod, or its default.
func (h *HealthCheck) StartPeriodOrDefault() time.Duration {
	return seconds(h.StartPeriod, DefaultHealthStartPeriod)
}

// FailuresOrDefault returns Failures, or its default.
func (h *HealthCheck) FailuresOrDefault() int {
	if h.Failures == 0 {
		return DefaultHealthFailures
	}
	return h.Failures
}

// SameCheck reports whether h and o check alike: the same probe, and the
// same interval, timeout, failures and start period once their defaults
// are applied. Two nil checks are alike.
func (h *HealthCheck) SameCheck(o *HealthCheck) bool {
	if h == nil || o == nil {
		return h == o
	}
	return h.TCPPort == o.TCPPort && h.HTTPPort == o.HTTPPort && h.HTTPPath == o.HTTPPath &&
		slices.Equal(h.Exec, o.Exec) && h.IntervalOrDefault() == o.IntervalOrDefault() &&
		h.TimeoutOrDefault() == o.TimeoutOrDefault() && h.FailuresOrDefault() == o.FailuresOrDefault() &&
		h.StartPeriodOrDefault() == o.StartPeriodOrDefault()
}

func seconds(n, def int) time.Duration {
	if n == 0 {
		n = def
	}
	return time.Duration(n) * time.Second
}

// String names the check as results and errors do: "tcp port 8080",
// "http port 80 path /healthz", "exec [pg_isready]".
func (h *HealthCheck) String() string {
	switch {
	case h.TCPPort != 0:
		return fmt.Sprintf("tcp port %d", h.TCPPort)
	case h.HTTPPort != 0:
		return fmt.Sprintf("http port %d path %s", h.HTTPPort, h.HTTPPath)
	}
	return fmt.Sprintf("exec %q", h.Exec)
}

// Validate checks that exactly one kind of check is named and that the
// times and counts are in range.
func (h *HealthCheck) Validate() error {
	kinds := 0
	if h.TCPPort != 0 {
		kinds++
		if h.TCPPort < 1 || h.TCPPort > 65535 {
			return fmt.Errorf("%w: health tcp_port %d is not between 1 and 65535", ErrBadField, h.TCPPort)
		}
	}
	if h.HTTPPort != 0 || h.HTTPPath != "" {
		kinds++
		if h.HTTPPort < 1 || h.HTTPPort > 65535 {
			return fmt.Errorf("%w: health http_port %d is not between 1 and 65535", ErrBadField, h.HTTPPort)
		}
		if !strings.HasPrefix(h.HTTPPath, "/") || len(h.HTTPPath) > MaxHealthHTTPPath ||
			strings.ContainsFunc(h.HTTPPath, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' }) {
			return fmt.Errorf("%w: health http_path must start with / and hold at most %d printable characters, no space or #", ErrBadField, MaxHealthHTTPPath)
		}
		if _, err := url.ParseRequestURI(h.HTTPPath); err != nil {
			return fmt.Errorf("%w: health http_path %q: %v", ErrBadField, h.HTTPPath, err)
		}
	}
	if len(h.Exec) > 0 {
		kinds++
		n := 0
		for _, a := range h.Exec {
			n += len(a)
			if strings.ContainsRune(a, 0) {
				return fmt.Errorf("%w: health exec holds a NUL byte", ErrBadField)
			}
		}
		if h.Exec[0] == "" || len(h.Exec) > MaxHealthExecArgs || n > MaxHealthExecBytes {
			return fmt.Errorf("%w: health exec must name a command, with at most %d words of %d bytes in all", ErrBadField, MaxHealthExecArgs, MaxHealthExecBytes)
		}
	}
	if kinds != 1 {
		return fmt.Errorf("%w: health names %d checks; it must name exactly one of tcp_port, http_port and http_path, or exec", ErrBadField, kinds)
	}
	switch {
	case h.Interval < 0 || h.Interval > MaxHealthInterval:
		return fmt.Errorf("%w: health interval %d s is not between 1 and %d", ErrBadField, h.Interval, MaxHealthInterval)
	case h.Timeout < 0 || h.Timeout > MaxHealthTimeout:
		return fmt.Errorf("%w: health timeout %d s is not between 1 and %d", ErrBadField, h.Timeout, MaxHealthTimeout)
	case h.Failures < 0 || h.Failures > MaxHealthFailures:
		return fmt.Errorf("%w: health failures %d is not between 1 and %d", ErrBadField, h.Failures, MaxHealthFailures)
	case h.StartPeriod < 0 || h.StartPeriod > MaxHealthStartPeriod:
		return fmt.Errorf("%w: health start_period %d s is not between 1 and %d", ErrBadField, h.StartPeriod, MaxHealthStartPeriod)
	case h.TimeoutOrDefault() > h.IntervalOrDefault():
		return fmt.Errorf("%w: health timeout %s is longer than its interval %s", ErrBadField, h.TimeoutOrDefault(), h.IntervalOrDefault())
	}
	return nil
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
	if c.Health != nil {
		if err := c.Health.Validate(); err != nil {
			return err
		}
	}
	switch c.Restart {
	case RestartDefault, RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fmt.Errorf("%w: restart policy %q is not always, on-failure or never", ErrBadField, c.Restart)
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
