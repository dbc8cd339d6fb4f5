// Package container runs provisiond's containers under runc.
//
// The image (a rootfs tarball, local or http(s)) is verified against its
// sha256 and unpacked once per digest into <DataDir>/images/<digest>. Each
// container, named "prv-<id>", gets a bundle <DataDir>/containers/prv-<id>
// holding an overlay (lower: the image, upper and work dirs beside it)
// mounted as rootfs, and a config.json built with the OCI runtime-spec
// types: its own pid, ipc, uts and mount namespaces, the network namespace
// the Network gives it, cgroup cpu quota and memory limit under
// /provisiond/prv-<id>, bind-mounted volumes, no new privileges and runc's
// minimal default capabilities. runc runs it detached with its own state
// directory <DataDir>/runc, stdout and stderr going to
// <DataDir>/logs/prv-<id>.log, so the container outlives the daemon.
//
// A container that stopped is reported vanished by Inspect; the next
// Provision deletes and runs it again, counting the exit. More than
// MaxExits exits within the exit window is a crash loop: the Manager calls
// OnGiveUp and fails permanently.
package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/primitives/internal/mounts"
	"github.com/edgeprov/provisiond/provision"
)

// Sentinel errors of the container package.
var (
	ErrBadID          = errors.New("container: bad id")
	ErrNoCPU          = errors.New("container: no cpu")
	ErrMemoryTooLow   = errors.New("container: memory below the minimum")
	ErrNoEntrypoint   = errors.New("container: no entrypoint")
	ErrBadDigest      = errors.New("container: bad image digest")
	ErrBadMount       = errors.New("container: bad mount")
	ErrDigestMismatch = errors.New("container: image digest mismatch")
	ErrImageNotFound  = errors.New("container: image not found")
	ErrBadImage       = errors.New("container: bad image")
	ErrImageTooLarge  = errors.New("container: image too large")
	ErrImageRefused   = errors.New("container: image URL refused")
	ErrCrashLoop      = errors.New("container: crash-looping")
)

// Defaults of Options.
const (
	// DefaultMaxExits is how many exits within the window are tolerated.
	DefaultMaxExits = 5
	// DefaultExitWindow is the window exits are counted in.
	DefaultExitWindow = 10 * time.Minute
	// DefaultMaxImageSize bounds the file content of an unpacked image.
	DefaultMaxImageSize = 4 << 30
	// DefaultMaxImageEntries bounds the entries (files, directories,
	// links) of an unpacked image.
	DefaultMaxImageEntries = 1 << 20
)

// Network attaches containers to networks; *network.Manager implements it.
type Network interface {
	// Check verifies that containerID may join networkID with ip.
	Check(ctx context.Context, networkID, containerID string, ip net.IP) error
	// Attach joins containerID to networkID with ip and returns the path
	// of the container's network namespace.
	Attach(ctx context.Context, networkID, containerID string, ip net.IP) (string, error)
	// Detach removes the container's attachment and namespace.
	Detach(ctx context.Context, containerID string) error
}

// Options configures a Manager.
type Options struct {
	// DataDir is the root of images, bundles, the runc state directory
	// (DataDir/runc) and logs. Required.
	DataDir string
	// RuncPath is the runc binary. Default "runc".
	RuncPath string
	// Network attaches containers to networks. Required when a Spec names
	// a network.
	Network Network
	// OnGiveUp is called when a container crash-loops, with a reason; nil
	// means nobody is told (the provision still fails permanently).
	OnGiveUp func(ctx context.Context, id, reason string) error
	// MaxExits is how many exits within ExitWindow are tolerated; one more
	// is a crash loop. Default DefaultMaxExits.
	MaxExits int
	// ExitWindow is the window exits are counted in. Default DefaultExitWindow.
	ExitWindow time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// HTTPClient downloads http(s) images. Default a client without an
	// overall timeout (the context bounds a download) that refuses, at
	// dial time and after every redirect, loopback, link-local, private
	// and the node's own addresses unless the URL's host is in
	// ImageHosts, and ignores proxies. A client given here is used as is.
	HTTPClient *http.Client
	// ImageHosts are the hosts (names or IP literals, as written in the
	// image URL, without a port) the default client may fetch images from
	// whatever they resolve to. Default none.
	ImageHosts []string
	// MaxImageSize bounds the bytes of file content an image may unpack
	// to, and MaxImageEntries its entries: a larger image fails for good
	// with ErrImageTooLarge, leaving nothing, instead of filling the
	// node's disk or inodes. Defaults DefaultMaxImageSize and
	// DefaultMaxImageEntries.
	MaxImageSize    int64
	MaxImageEntries int
	// LocalImages is the directory below which local image paths (a
	// Spec.Image that is not an http(s) URL) are served. A path outside
	// it, or one that leaves it through a symlink (an absolute symlink
	// always does), fails for good with ErrBadImage, so a user cannot
	// read or probe the node's other files. Default "": every local path
	// is refused; only http(s) images are used.
	LocalImages string
	// Log receives debug messages. Default zerolog.Nop().
	Log zerolog.Logger
}

// Mount binds a host directory into a container.
type Mount struct {
	// Source is the host directory (a mounted volume).
	Source string
	// Destination is the absolute path inside the container.
	Destination string
}

// Spec is what a container runs with.
type Spec struct {
	// Image is a rootfs tarball: an http(s) URL, or an absolute local
	// path below Options.LocalImages.
	Image string
	// Digest is the tarball's sha256, lowercase hex.
	Digest string
	// Args is the entrypoint and its arguments.
	Args []string
	// Env is the process environment.
	Env map[string]string
	// Mounts are bind mounts of volumes.
	Mounts []Mount
	// NetworkID is the network to join ("" for an empty namespace of its own).
	NetworkID string
	// IP is the container's address in the network.
	IP net.IP
	// CPU is the number of cores (the CFS quota).
	CPU int64
	// Memory is the memory limit in MiB.
	Memory int64
}

// Info describes a running container; it is the data of the result.
type Info struct {
	// ID is the container reservation's id.
	ID string `json:"id"`
	// IP is the container's address ("" without a network).
	IP string `json:"ip"`
}

// Manager provisions and removes containers. Operations on one id must not
// overlap (the Engine serialises them); different ids may run concurrently.
type Manager struct {
	runc       runc
	imagesDir  string
	bundlesDir string
	logsDir    string
	network    Network
	onGiveUp   func(ctx context.Context, id, reason string) error
	maxExits   int
	window     time.Duration
	exits      *exits
	client     *http.Client
	imageLimit imageLimit
	local      string // Options.LocalImages, absolute and clean; "" serves none
	memsw      bool
	leases     imageLeases
	log        zerolog.Logger
}

// New returns a Manager. It panics when opts.DataDir is empty.
func New(opts Options) *Manager {
	if opts.DataDir == "" {
		panic("container: Options.DataDir is required")
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		dataDir = filepath.Clean(opts.DataDir)
	}
	if opts.RuncPath == "" {
		opts.RuncPath = "runc"
	}
	if opts.MaxExits <= 0 {
		opts.MaxExits = DefaultMaxExits
	}
	if opts.ExitWindow <= 0 {
		opts.ExitWindow = DefaultExitWindow
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = newImageGuard(opts.ImageHosts).client()
	}
	if opts.MaxImageSize <= 0 {
		opts.MaxImageSize = DefaultMaxImageSize
	}
	if opts.MaxImageEntries <= 0 {
		opts.MaxImageEntries = DefaultMaxImageEntries
	}
	local := opts.LocalImages
	if local != "" {
		if abs, err := filepath.Abs(local); err == nil {
			local = abs
		} else {
			local = filepath.Clean(local)
		}
	}
	return &Manager{
		runc:       runc{bin: opts.RuncPath, root: filepath.Join(dataDir, "runc")},
		imagesDir:  filepath.Join(dataDir, "images"),
		bundlesDir: filepath.Join(dataDir, "containers"),
		logsDir:    filepath.Join(dataDir, "logs"),
		network:    opts.Network,
		onGiveUp:   opts.OnGiveUp,
		maxExits:   opts.MaxExits,
		window:     opts.ExitWindow,
		exits:      newExits(opts.Now, opts.ExitWindow),
		client:     opts.HTTPClient,
		imageLimit: imageLimit{bytes: opts.MaxImageSize, entries: opts.MaxImageEntries},
		local:      local,
		memsw:      memswAccounted(),
		log:        opts.Log.With().Str("component", "container").Logger(),
	}
}

// Name returns the name of container id: its runc id, bundle and log name.
func Name(id string) string { return provision.Prefix + id }

// RuncRoot returns the runc state directory the Manager uses.
func (m *Manager) RuncRoot() string { return m.runc.root }

// Bundle returns the bundle directory of container id.
func (m *Manager) Bundle(id string) string { return filepath.Join(m.bundlesDir, Name(id)) }

// LogPath returns the log file of container id.
func (m *Manager) LogPath(id string) string { return filepath.Join(m.logsDir, Name(id)+".log") }

func (m *Manager) rootfs(id string) string { return filepath.Join(m.Bundle(id), "rootfs") }

func checkID(id string) error {
	if err := provision.ValidName("container id", id); err != nil {
		return provision.Permanent(fmt.Errorf("%w: %w", ErrBadID, err))
	}
	return nil
}

// check refuses a spec that cannot run, before anything is touched.
func check(s *Spec) error {
	d := s.Digest
	switch {
	case s.CPU <= 0:
		return provision.Permanentf("%w: cpu %d", ErrNoCPU, s.CPU)
	case s.Memory < provision.MinContainerMemory:
		return provision.Permanentf("%w: %d MiB < %d MiB", ErrMemoryTooLow, s.Memory, provision.MinContainerMemory)
	case len(s.Args) == 0 || s.Args[0] == "":
		return provision.Permanent(ErrNoEntrypoint)
	case len(d) != 64 || strings.Trim(d, "0123456789abcdef") != "":
		return provision.Permanentf("%w: %q", ErrBadDigest, d)
	case s.NetworkID != "" && s.IP.To4() == nil:
		return provision.Permanentf("%w: ip %q", provision.ErrBadField, s.IP)
	}
	for _, mt := range s.Mounts {
		if !filepath.IsAbs(mt.Source) || !filepath.IsAbs(mt.Destination) || filepath.Clean(mt.Destination) != mt.Destination || mt.Destination == "/" {
			return provision.Permanentf("%w: %s on %s", ErrBadMount, mt.Source, mt.Destination)
		}
	}
	return nil
}

// Provision runs container id with spec s and returns its info. It refuses
// a bad spec, a network the container may not join (see Network.Check) and
// an image whose digest does not match before touching anything. It is
// idempotent: a running container with the same configuration is left
// alone; a stopped one (its exit is counted), a half-made one or one with
// another configuration is deleted and run again.
func (m *Manager) Provision(ctx context.Context, id string, s Spec) (Info, error) {
	if err := checkID(id); err != nil {
		return Info{}, err
	}
	if err := check(&s); err != nil {
		return Info{}, err
	}
	if s.NetworkID != "" {
		if m.network == nil {
			panic("container: a network is named but Options.Network is nil")
		}
		if err := m.network.Check(ctx, s.NetworkID, id, s.IP); err != nil {
			return Info{}, err
		}
	}
	// The image stays leased until the container runs on it: the
	// garbage collector never removes it meanwhile (see ImageSweep).
	release := m.leases.lease(s.Digest)
	defer release()
	lower, err := m.ensureImage(ctx, s.Image, s.Digest)
	if err != nil {
		return Info{}, err
	}
	name := Name(id)
	info := Info{ID: id}
	if s.NetworkID != "" {
		info.IP = s.IP.To4().String()
	}

	state, err := m.runc.state(ctx, name)
	if err != nil {
		return Info{}, fmt.Errorf("checking container %s: %w", id, err)
	}
	if state == stateStopped {
		if err := m.countExit(ctx, id); err != nil {
			return Info{}, err
		}
	}

	nsPath := ""
	if s.NetworkID != "" {
		if nsPath, err = m.network.Attach(ctx, s.NetworkID, id, s.IP); err != nil {
			return Info{}, err
		}
	}
	bundle := m.Bundle(id)
	if err := m.mountRootfs(id, lower); err != nil {
		return Info{}, fmt.Errorf("mounting rootfs of container %s: %w", id, err)
	}
	changed, err := writeConfig(bundle, runtimeSpec(name, &s, m.rootfs(id), nsPath, m.memsw))
	if err != nil {
		return Info{}, fmt.Errorf("writing config of container %s: %w", id, err)
	}
	if state == stateRunning && !changed {
		return info, nil
	}
	if state != "" {
		if err := m.runc.remove(ctx, name); err != nil {
			return Info{}, fmt.Errorf("removing old container %s: %w", id, err)
		}
	}
	if err := m.start(ctx, id, bundle); err != nil {
		if cerr := m.countExit(ctx, id); errors.Is(cerr, ErrCrashLoop) {
			return Info{}, errors.Join(err, cerr)
		}
		return Info{}, provision.Temporary(err)
	}
	m.log.Debug().Str("container", id).Str("ip", info.IP).Msg("container started")
	return info, nil
}

// countExit records an exit of id and gives up when it makes a crash loop.
func (m *Manager) countExit(ctx context.Context, id string) error {
	n := m.exits.record(id)
	if n <= m.maxExits {
		m.log.Info().Str("container", id).Int("exits", n).Msg("container exited, restarting")
		return nil
	}
	reason := fmt.Sprintf("crash-looping: %d exits in %s", n, m.window)
	m.log.Warn().Str("container", id).Str("reason", reason).Msg("giving up on container")
	var gerr error
	if m.onGiveUp != nil {
		if gerr = m.onGiveUp(ctx, id, reason); gerr != nil {
			gerr = fmt.Errorf("reporting crash loop of %s: %w", id, gerr)
		}
	}
	return provision.Permanent(errors.Join(fmt.Errorf("%w: container %s: %s", ErrCrashLoop, id, reason), gerr))
}

func (m *Manager) start(ctx context.Context, id, bundle string) error {
	if err := os.MkdirAll(m.logsDir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(m.runc.root, 0o700); err != nil {
		return err
	}
	log, err := os.OpenFile(m.LogPath(id), os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return fmt.Errorf("opening log of container %s: %w", id, err)
	}
	defer log.Close()
	if err := m.runc.start(ctx, Name(id), bundle, log); err != nil {
		// Do not leave a half-made runc container behind.
		if rerr := m.runc.remove(context.WithoutCancel(ctx), Name(id)); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	return nil
}

// mountRootfs mounts the container's overlay unless it is mounted.
func (m *Manager) mountRootfs(id, lower string) error {
	bundle := m.Bundle(id)
	rootfs := m.rootfs(id)
	if mnt, ok, err := mounts.Find(rootfs); err != nil {
		return err
	} else if ok && mnt.FSType == "overlay" {
		return nil
	}
	upper, work := filepath.Join(bundle, "upper"), filepath.Join(bundle, "work")
	for _, d := range []string{upper, work, rootfs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := os.Chmod(upper, 0o755); err != nil {
		return err
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	return unix.Mount("overlay", rootfs, "overlay", 0, opts)
}

// Inspect returns nil when container id runs, and an error wrapping
// provision.ErrVanished when it stopped or is gone.
func (m *Manager) Inspect(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	state, err := m.runc.state(ctx, Name(id))
	if err != nil {
		return fmt.Errorf("inspecting container %s: %w", id, err)
	}
	switch state {
	case stateRunning:
		return nil
	case "":
		return fmt.Errorf("inspecting container %s: %w: no such container", id, provision.ErrVanished)
	default:
		return fmt.Errorf("inspecting container %s: %w: %s", id, provision.ErrVanished, state)
	}
}

// Decommission kills and deletes container id, detaches it from its
// network, unmounts its rootfs and removes its bundle and log. An absent
// container is success.
func (m *Manager) Decommission(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := m.runc.remove(ctx, Name(id)); err != nil {
		return fmt.Errorf("deleting container %s: %w", id, err)
	}
	if m.network != nil {
		if err := m.network.Detach(ctx, id); err != nil {
			return err
		}
	}
	if err := mounts.Unmount(m.rootfs(id)); err != nil {
		return fmt.Errorf("unmounting rootfs of container %s: %w", id, err)
	}
	if err := os.RemoveAll(m.Bundle(id)); err != nil {
		return fmt.Errorf("removing bundle of container %s: %w", id, err)
	}
	if err := os.Remove(m.LogPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing log of container %s: %w", id, err)
	}
	m.exits.forget(id)
	m.log.Debug().Str("container", id).Msg("container decommissioned")
	return nil
}

// List returns the ids of the containers that have a runc container in our
// root, a bundle or a log under the prefix.
func (m *Manager) List(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var ids []string
	add := func(name string) {
		id, ok := strings.CutPrefix(name, provision.Prefix)
		if ok && !seen[id] && provision.ValidName("id", id) == nil {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	names, err := m.runc.list()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		add(n)
	}
	for _, dir := range []string{m.bundlesDir, m.logsDir} {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("listing containers: %w", err)
		}
		for _, e := range entries {
			add(strings.TrimSuffix(e.Name(), ".log"))
		}
	}
	return ids, nil
}
