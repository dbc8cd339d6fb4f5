// Package primitives is provisiond's typed provisioner table: networks
// (primitives/network), volumes (primitives/volume) and containers
// (primitives/container) on the real machine, as root.
//
// Everything created is named after the reservation (or, for networks, the
// NetworkID) under provision.Prefix:
//
//	network    netns /run/netns/prv-<network id>, bridge prv-br0 inside it; with an uplink a
//	           veth prv-e<10 hex of the id> (node) / prv-up (network), nftables tables prv-net
//	           (network) and prv-node (node; published ports are rules labelled prv-<owner> …)
//	volume     <SSDPath|HDDPath>/prv-<id>.img, loop device, mount <DataDir>/mounts/prv-<id>
//	wireguard  helper process "provisiond wireguard --interface prv-w<10 hex of the network id>" in the network's namespace, log <DataDir>/wireguard/prv-w….log
//	container  runc container prv-<id> in <DataDir>/runc, bundle <DataDir>/containers/prv-<id>
//	           (overlay rootfs, config.json), netns /run/netns/prv-c-<id>, veth pair
//	           (eth0 inside, prv-v<hash> on the network's bridge), log <DataDir>/logs/prv-<id>.log,
//	           cgroup /provisiond/prv-<id>
//	images     <DataDir>/images/<sha256> (shared by digest, not a resource)
//
// List reports only objects carrying the prefix; Remove removes exactly one
// of them.
package primitives

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/primitives/network"
	"github.com/edgeprov/provisiond/primitives/volume"
	"github.com/edgeprov/provisiond/provision"
)

// Sentinel errors of the primitives package.
var (
	ErrForeignVolume = errors.New("primitives: volume belongs to another user")
	ErrNotVolume     = errors.New("primitives: mounted reservation is not a volume")
	ErrUnknownVolume = errors.New("primitives: unknown volume")
	ErrNotOurs       = errors.New("primitives: resource does not carry our prefix")
	ErrWrongType     = errors.New("primitives: workload of an unexpected type")
	ErrNoWireGuard   = errors.New("primitives: wireguard key unusable")
	ErrVolumeInUse   = fmt.Errorf("primitives: volume in use by a container (%w)", provision.ErrInUse)
)

// Options configures the primitives.
type Options struct {
	// DataDir is the root of everything the primitives keep on disk:
	// images, volume mounts, the runc state directory, container bundles
	// and logs. Required.
	DataDir string
	// SSDPath is where ssd volume images live. Default DataDir/volumes/ssd.
	SSDPath string
	// HDDPath is where hdd volume images live. Default DataDir/volumes/hdd.
	HDDPath string
	// RuncPath is the runc binary. Default "runc".
	RuncPath string
	// Log is the logger. Default zerolog.Nop() (the zero Logger).
	Log zerolog.Logger
	// Now is the clock (crash-loop windows). Default time.Now.
	Now func() time.Time
	// Lookup returns the reservation of an id, so that a container only
	// mounts volumes of its own user. nil skips that check.
	Lookup func(id string) (*provision.Reservation, error)
	// HTTPClient downloads images. Default a client without an overall
	// timeout (the context bounds a download) that refuses loopback,
	// link-local, private and the node's own addresses (see
	// container.Options.HTTPClient).
	HTTPClient *http.Client
	// ImageHosts are the hosts an image may be fetched from whatever
	// address they resolve to (container.Options.ImageHosts). Default none.
	ImageHosts []string
	// MaxImageSize bounds the bytes of file content a container image may
	// unpack to. Default container.DefaultMaxImageSize.
	MaxImageSize int64
	// LocalImages is the directory local container image paths must lie
	// below (container.Options.LocalImages). Default "": only http(s)
	// images are used.
	LocalImages string
	// InsecureRegistries are the registries (HOST:PORT) spoken to over
	// plain HTTP, and RegistryMirrors those asked first for every registry
	// image (container.Options). Default none.
	InsecureRegistries []string
	RegistryMirrors    []string
	// RegistryAuth holds the credentials of private registries
	// (container.Options.RegistryAuth). Default nil: none.
	RegistryAuth *registry.Auth
	// Uplink is the node's public interface (network.Options.Uplink):
	// networks reach the outside through it and containers publish ports
	// on it. Default "": networks are islands, publishing fails.
	Uplink string
	// PortMin and PortMax bound the node ports containers may publish.
	// Default 1024 and 65535.
	PortMin, PortMax int
	// WireGuardHelper runs a network's WireGuard device in a process of
	// its own (network.Options.WireGuardHelper). Default none: WireGuard
	// networks fail.
	WireGuardHelper []string
	// OpenSealed opens a secret sealed to the node (identity.Open with
	// the node's key): a WireGuard network's private key. nil: WireGuard
	// networks fail.
	OpenSealed func(sealed string) ([]byte, error)
	// ContainerPidsLimit caps each container's processes
	// (container.Options.PidsLimit). Default container.DefaultPidsLimit.
	ContainerPidsLimit int64
	// ContainerLogMaxSize and ContainerLogMaxFiles bound each container's
	// log (container.Options.LogMaxSize, LogMaxFiles). Defaults
	// container.DefaultLogMaxSize and container.DefaultLogMaxFiles.
	ContainerLogMaxSize  int64
	ContainerLogMaxFiles int
	// ContainerRunDir is where root filesystems are mounted
	// (container.Options.RunDir). Default container.DefaultRunDir.
	ContainerRunDir string
	// ContainerRestartBackoff and ContainerRestartBackoffMax bound the
	// wait before a stopped container is restarted
	// (container.Options.RestartBackoff, RestartBackoffMax). Defaults
	// container.DefaultRestartBackoff and DefaultRestartBackoffMax.
	ContainerRestartBackoff    time.Duration
	ContainerRestartBackoffMax time.Duration
	// ContainerBootID is the node's boot id (container.Options.BootID).
	// Default the kernel's.
	ContainerBootID string
}

// Table provisions, decommissions, inspects and lists the workloads of
// every reservation type.
type Table struct {
	table     provision.Table
	networks  *network.Manager
	volumes   *volume.Manager
	container *container.Manager
	lookup    func(id string) (*provision.Reservation, error)
	// giveUp is told when a container crash-loops; set by GiveUpTo.
	giveUp atomic.Pointer[decommissioner]
	// watcher is told when a container's status changed; set by WatchedBy.
	watcher atomic.Pointer[inspectRequester]
	open    func(sealed string) ([]byte, error)
}

// decommissioner boxes a provision.Decommissioner for an atomic pointer.
type decommissioner struct{ provision.Decommissioner }

// inspectRequester boxes a provision.InspectRequester for an atomic
// pointer.
type inspectRequester struct{ provision.InspectRequester }

var (
	_ provision.Primitives = (*Table)(nil)
	_ provision.Inspector  = (*Table)(nil)
	_ provision.Lister     = (*Table)(nil)
	_ provision.GiveUpper  = (*Table)(nil)

	_ provision.StatusInspector = (*Table)(nil)
	_ provision.Watched         = (*Table)(nil)
)

// New returns the primitives. It panics when opts.DataDir is empty.
func New(opts Options) *Table {
	if opts.DataDir == "" {
		panic("primitives: Options.DataDir is required")
	}
	log := opts.Log.With().Str("component", "primitives").Logger()
	nets := network.NewWith(network.Options{Log: log, Uplink: opts.Uplink, PortMin: opts.PortMin, PortMax: opts.PortMax,
		WireGuardHelper: opts.WireGuardHelper, HelperLogs: filepath.Join(opts.DataDir, "wireguard")})
	t := &Table{
		networks: nets,
		volumes: volume.New(volume.Options{
			DataDir: opts.DataDir, SSDPath: opts.SSDPath, HDDPath: opts.HDDPath, Log: log,
		}),
		lookup: opts.Lookup,
		open:   opts.OpenSealed,
	}
	t.container = container.New(container.Options{
		DataDir: opts.DataDir, RuncPath: opts.RuncPath, Network: nets, OnGiveUp: t.onGiveUp,
		Now: opts.Now, HTTPClient: opts.HTTPClient, MaxImageSize: opts.MaxImageSize,
		LocalImages: opts.LocalImages, ImageHosts: opts.ImageHosts, Log: log,
		PidsLimit: opts.ContainerPidsLimit, LogMaxSize: opts.ContainerLogMaxSize,
		LogMaxFiles: opts.ContainerLogMaxFiles, RunDir: opts.ContainerRunDir,
		OnChange: t.onChange, RestartBackoff: opts.ContainerRestartBackoff, RestartBackoffMax: opts.ContainerRestartBackoffMax,
		BootID:             opts.ContainerBootID,
		InsecureRegistries: opts.InsecureRegistries, RegistryMirrors: opts.RegistryMirrors,
		RegistryAuth: opts.RegistryAuth,
	})
	t.table = t.newTable()
	return t
}

// GiveUpTo makes d the one told when a container crash-loops (the
// Engine's DecommissionCached, which engine.New hands over).
// d.DecommissionCached must not wait for the container's current
// operation to end. Until it is called, nobody is told.
func (t *Table) GiveUpTo(d provision.Decommissioner) {
	t.giveUp.Store(&decommissioner{d})
}

// onGiveUp tells the Decommissioner of GiveUpTo, if any, that the
// primitives give up on id.
func (t *Table) onGiveUp(ctx context.Context, id, reason string) error {
	d := t.giveUp.Load()
	if d == nil {
		return nil
	}
	return d.DecommissionCached(ctx, id, reason)
}

// WatchedBy makes r the one told when a container's status changes or its
// restart is due (the Engine's InspectSoon, which provision.NewEngine
// hands over). Until it is called, nobody is told: the next periodic
// inspection finds the change.
func (t *Table) WatchedBy(r provision.InspectRequester) {
	t.watcher.Store(&inspectRequester{r})
}

// onChange tells the InspectRequester of WatchedBy, if any, that container
// id should be inspected.
func (t *Table) onChange(id string) {
	if w := t.watcher.Load(); w != nil {
		w.InspectSoon(id)
	}
}

// typed adapts a primitive on workload type W to the untyped table: Data
// is decoded and validated once, by r.Workload().
type typed[W any] struct {
	provision    func(context.Context, *provision.Reservation, W) (any, error)
	decommission func(context.Context, *provision.Reservation, W) error
}

func workload[W any](r *provision.Reservation) (W, error) {
	var zero W
	w, err := r.Workload()
	if err != nil {
		return zero, provision.Permanent(err)
	}
	tw, ok := w.(W)
	if !ok {
		return zero, provision.Permanentf("%w: %T for %s", ErrWrongType, w, r.Type)
	}
	return tw, nil
}

func (t typed[W]) provisioner() provision.ProvisionerFunc {
	return func(ctx context.Context, r *provision.Reservation) (any, error) {
		w, err := workload[W](r)
		if err != nil {
			return nil, err
		}
		return t.provision(ctx, r, w)
	}
}

func (t typed[W]) decommissioner() provision.DecomissionerFunc {
	return func(ctx context.Context, r *provision.Reservation) error {
		w, err := workload[W](r)
		if err != nil {
			return err
		}
		return t.decommission(ctx, r, w)
	}
}

// newTable is the one place that says which function handles which type.
func (t *Table) newTable() provision.Table {
	nets := typed[*provision.Network]{provision: t.provisionNetwork, decommission: t.decommissionNetwork}
	vols := typed[*provision.Volume]{provision: t.provisionVolume, decommission: t.decommissionVolume}
	ctrs := typed[*provision.Container]{provision: t.provisionContainer, decommission: t.decommissionContainer}
	return provision.Table{
		Provisioners: map[provision.ReservationType]provision.ProvisionerFunc{
			provision.NetworkReservation:   nets.provisioner(),
			provision.VolumeReservation:    vols.provisioner(),
			provision.ContainerReservation: ctrs.provisioner(),
		},
		Decomissioners: map[provision.ReservationType]provision.DecomissionerFunc{
			provision.NetworkReservation:   nets.decommissioner(),
			provision.VolumeReservation:    vols.decommissioner(),
			provision.ContainerReservation: ctrs.decommissioner(),
		},
	}
}

// Provision creates the workload of r and returns its result data:
// network {network_id, namespace, gateway}, volume {id, path}, container
// {id, ip}.
func (t *Table) Provision(ctx context.Context, r *provision.Reservation) (any, error) {
	return t.table.Provision(ctx, r)
}

// Decommission removes the workload of r; an absent workload is success.
func (t *Table) Decommission(ctx context.Context, r *provision.Reservation) error {
	return t.table.Decommission(ctx, r)
}

func (t *Table) provisionNetwork(ctx context.Context, r *provision.Reservation, n *provision.Network) (any, error) {
	id := provision.NetworkID(r.UserID, n.Name)
	if n.WireGuard == nil {
		return t.networks.Provision(ctx, id, n.Gateway())
	}
	spec, err := t.wireGuardSpec(n)
	if err != nil {
		return nil, err
	}
	return t.networks.ProvisionWith(ctx, id, n.Gateway(), spec)
}

// wireGuardSpec opens the sealed key of a (valid) WireGuard network and
// parses its peers.
func (t *Table) wireGuardSpec(n *provision.Network) (*network.WireGuardSpec, error) {
	if t.open == nil {
		return nil, provision.Permanentf("%w: this node cannot open sealed keys", ErrNoWireGuard)
	}
	key, err := t.open(n.WireGuard.PrivateKey)
	if err != nil {
		return nil, provision.Permanentf("%w: private_key: %w", ErrNoWireGuard, err)
	}
	priv, err := wgtypes.NewKey(key)
	if err != nil {
		return nil, provision.Permanentf("%w: private_key: %w", ErrNoWireGuard, err)
	}
	_, rng, _ := net.ParseCIDR(n.IPRange)
	spec := &network.WireGuardSpec{PrivateKey: priv, ListenPort: n.WireGuard.ListenPort, Range: rng}
	for _, p := range n.WireGuard.Peers {
		k, _ := provision.ParseWireGuardKey(p.PublicKey)
		peer := network.WireGuardPeer{PublicKey: wgtypes.Key(k)}
		if p.Endpoint != "" {
			ap := netip.MustParseAddrPort(p.Endpoint)
			peer.Endpoint = net.UDPAddrFromAddrPort(ap)
		}
		for _, a := range p.AllowedIPs {
			_, ipn, _ := net.ParseCIDR(a)
			peer.AllowedIPs = append(peer.AllowedIPs, *ipn)
		}
		spec.Peers = append(spec.Peers, peer)
	}
	return spec, nil
}

func (t *Table) decommissionNetwork(ctx context.Context, r *provision.Reservation, n *provision.Network) error {
	return t.networks.Decommission(ctx, provision.NetworkID(r.UserID, n.Name))
}

func (t *Table) provisionVolume(ctx context.Context, r *provision.Reservation, v *provision.Volume) (any, error) {
	return t.volumes.Provision(ctx, r.ID, v.Type, v.Size<<30)
}

func (t *Table) decommissionVolume(ctx context.Context, r *provision.Reservation, _ *provision.Volume) error {
	return t.removeVolume(ctx, r.ID)
}

// removeVolume decommissions volume id unless a container mounts it: that
// is a temporary error wrapping ErrVolumeInUse naming the containers, so
// the engine retries (with backoff, as for a network with containers)
// and the delete completes once they are gone. The volume is untouched
// meanwhile: deleting its image under a container would destroy what
// the container is writing.
func (t *Table) removeVolume(ctx context.Context, id string) error {
	users, err := t.container.Using(ctx, t.volumes.Path(id))
	if err != nil {
		return provision.Temporary(fmt.Errorf("checking who mounts volume %s: %w", id, err))
	}
	if len(users) > 0 {
		return provision.Temporary(fmt.Errorf("%w: volume %s is mounted by container %s; it is deleted once the container is gone",
			ErrVolumeInUse, id, strings.Join(users, ", ")))
	}
	return t.volumes.Decommission(ctx, id)
}

func (t *Table) provisionContainer(ctx context.Context, r *provision.Reservation, c *provision.Container) (any, error) {
	for _, m := range c.Mounts {
		if err := t.checkVolume(r, m.VolumeID); err != nil {
			return nil, err
		}
	}
	spec := container.Spec{
		Image:     c.Image,
		Digest:    c.ImageSHA256(),
		Args:      c.Entrypoint,
		Env:       c.Env,
		NetworkID: c.Network.NetworkID,
		Health:    c.Health,
		Restart:   c.Restart,
		CPU:       c.Capacity.CPU,
		Memory:    c.Capacity.Memory,
		DiskSize:  c.Capacity.DiskSize,
	}
	if c.Network.NetworkID != "" {
		spec.IP = net.ParseIP(c.Network.IP)
	}
	for _, m := range c.Mounts {
		p, err := t.volumes.Mount(ctx, m.VolumeID)
		if err != nil {
			return nil, fmt.Errorf("mounting volume %s for container %s: %w", m.VolumeID, r.ID, err)
		}
		spec.Mounts = append(spec.Mounts, container.Mount{Source: p, Destination: m.Mountpoint})
	}
	if len(c.Publish) > 0 {
		// The ports are taken first: a taken one refuses the container
		// before anything of it runs.
		ports := make([]network.Port, len(c.Publish))
		for i, p := range c.Publish {
			ports[i] = network.Port{Port: p.Port, ContainerPort: p.ContainerPort, Protocol: p.Protocol}
		}
		if err := t.networks.Publish(ctx, c.Network.NetworkID, r.ID, spec.IP, ports); err != nil {
			return nil, err
		}
	}
	info, err := t.container.Provision(ctx, r.ID, spec)
	if err != nil && len(c.Publish) > 0 && !provision.IsTemporary(err) {
		if uerr := t.networks.Unpublish(context.WithoutCancel(ctx), r.ID); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}
	return info, err
}

// checkVolume refuses a mount of a reservation that is not a volume of
// r's user.
func (t *Table) checkVolume(r *provision.Reservation, id string) error {
	if t.lookup == nil {
		return nil
	}
	v, err := t.lookup(id)
	if errors.Is(err, provision.ErrNotFound) {
		return provision.Permanentf("%w: %s", ErrUnknownVolume, id)
	}
	if err != nil {
		return provision.Temporary(fmt.Errorf("looking up volume %s: %w", id, err))
	}
	if v.Type != provision.VolumeReservation {
		return provision.Permanentf("%w: %s is a %s", ErrNotVolume, id, v.Type)
	}
	if v.UserID != r.UserID {
		return provision.Permanentf("%w: %s", ErrForeignVolume, id)
	}
	return nil
}

func (t *Table) decommissionContainer(ctx context.Context, r *provision.Reservation, _ *provision.Container) error {
	return t.container.Decommission(ctx, r.ID)
}

// Inspect checks the workload of r: nil when present and healthy, an error
// wrapping provision.ErrVanished when it is gone (a stopped container, an
// unmounted volume, a missing namespace).
func (t *Table) Inspect(ctx context.Context, r *provision.Reservation) error {
	w, err := r.Workload()
	if err != nil {
		return provision.Permanent(err)
	}
	switch w := w.(type) {
	case *provision.Network:
		return t.networks.InspectWith(ctx, provision.NetworkID(r.UserID, w.Name), w.WireGuard != nil)
	case *provision.Volume:
		return t.volumes.Inspect(ctx, r.ID)
	case *provision.Container:
		return t.container.Inspect(ctx, r.ID)
	}
	return provision.Permanentf("%w: %T", ErrWrongType, w)
}

// InspectStatus is Inspect that also returns a container's status (its
// container.Info: state, health, restarts, last exit) when it is present;
// other workloads report none.
func (t *Table) InspectStatus(ctx context.Context, r *provision.Reservation) (any, error) {
	if err := t.Inspect(ctx, r); err != nil {
		return nil, err
	}
	if r.Type != provision.ContainerReservation {
		return nil, nil
	}
	info, err := t.container.Status(ctx, r.ID)
	if errors.Is(err, container.ErrNoStatus) {
		return nil, nil // its result stays what the earlier release signed
	}
	return info, err
}

// List returns every runtime object under the prefix: network namespaces,
// volumes (images, mounts) and containers (runc containers in our root,
// bundles, logs, namespaces), one Resource per workload.
func (t *Table) List(ctx context.Context) ([]provision.Resource, error) {
	var res []provision.Resource
	nets, err := t.networks.Networks(ctx)
	if err != nil {
		return nil, err
	}
	for _, id := range nets {
		res = append(res, provision.Resource{Type: provision.NetworkReservation, ID: id, Name: network.Namespace(id)})
	}
	vols, err := t.volumes.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, id := range vols {
		res = append(res, provision.Resource{Type: provision.VolumeReservation, ID: id, Name: volume.Name(id)})
	}
	ctrs, err := t.container.List(ctx)
	if err != nil {
		return nil, err
	}
	attached, err := t.networks.Containers(ctx)
	if err != nil {
		return nil, err
	}
	for _, id := range attached {
		if !slices.Contains(ctrs, id) {
			ctrs = append(ctrs, id)
		}
	}
	for _, id := range ctrs {
		res = append(res, provision.Resource{Type: provision.ContainerReservation, ID: id, Name: container.Name(id)})
	}
	return res, nil
}

// Remove removes the orphan res, as List reported it. It refuses a
// resource whose name is not the prefixed name of its id.
func (t *Table) Remove(ctx context.Context, res provision.Resource) error {
	if res.Name != provision.Prefix+res.ID || provision.ValidName("resource id", res.ID) != nil {
		return provision.Permanentf("%w: %q (%s %q)", ErrNotOurs, res.Name, res.Type, res.ID)
	}
	switch res.Type {
	case provision.NetworkReservation:
		return t.networks.Decommission(ctx, res.ID)
	case provision.VolumeReservation:
		return t.removeVolume(ctx, res.ID)
	case provision.ContainerReservation:
		return t.container.Decommission(ctx, res.ID)
	}
	return provision.Permanentf("%w: %q", provision.ErrUnknownType, res.Type)
}

// SweepImages removes the unpacked container images no live record
// references; see container.Manager.SweepImages.
func (t *Table) SweepImages(ctx context.Context, referenced func() (map[string]bool, error)) (container.SweepResult, error) {
	return t.container.SweepImages(ctx, referenced)
}

// Containers returns the container manager (its directories, for disk
// usage).
func (t *Table) Containers() *container.Manager { return t.container }
