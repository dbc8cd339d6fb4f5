// Package container runs provisiond's containers under runc.
//
// The image (a rootfs tarball, local or http(s)) is verified against its
// sha256 and unpacked once per digest into <DataDir>/images/<digest>; a
// registry image pinned by digest is pulled into <DataDir>/blobs and its
// layers unpacked once each into <DataDir>/layers (registry.go). Each
// container, named "prv-<id>", gets a bundle <DataDir>/containers/prv-<id>
// holding its disk (an allocated ext4 image of its disk size, loop-mounted,
// with the overlay's upper and work directories: a full disk is ENOSPC to
// the container alone), the image mounted idmapped to the container's uid
// range as the overlay's lower layer, its volumes mounted idmapped, and a
// config.json built with the OCI runtime-spec types: a user namespace
// mapping the container's ids to a host range of its own (userns.go), its
// own pid, ipc, uts and mount namespaces, the network namespace the Network
// gives it, Docker's default seccomp profile, cgroup cpu quota, memory and
// pids limits under /provisiond/prv-<id>, no new privileges and runc's
// minimal default capabilities. The overlay is mounted at
// <RunDir>/prv-<id>. runc runs it detached with its own state directory
// <DataDir>/runc, so the container outlives the daemon; its stdout and
// stderr go through a FIFO the daemon copies into rotated log files
// <DataDir>/logs/prv-<id>.log (logs.go).
//
// A container runs under a shim that records its exit code (runc.go), and
// a supervisor goroutine (supervise.go) follows it: its health check
// (health.go), its exit, and its restart policy (restarts.go), whose
// state — restarts, exits, backoff — lives in its bundle and survives a
// daemon restart. A container whose policy restarts it is reported
// vanished by Inspect once its backoff (10 s, doubled for each exit within
// the exit window, at most 5 min) passed; the next Provision runs it
// again. More than MaxExits exits within the exit window is a crash loop:
// the Manager calls OnGiveUp and fails permanently. A container with a
// health check is ready — Provision returns — only once its check passed.
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/internal/backoff"
	"github.com/edgeprov/provisiond/internal/images"
	"github.com/edgeprov/provisiond/internal/registry"
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
	ErrImageRefused   = errors.New("container: image source refused")
	ErrCrashLoop      = errors.New("container: crash-looping")
	ErrNoStatus       = errors.New("container: no status (started by an earlier release)")
)

// Defaults of Options.
const (
	// DefaultMaxExits is how many exits within the window are tolerated.
	DefaultMaxExits = 5
	// DefaultExitWindow is the window exits are counted in.
	DefaultExitWindow = 10 * time.Minute
	// DefaultMaxImageSize bounds the file content of an unpacked image.
	DefaultMaxImageSize = 4 << 30
	// DefaultRunDir is where root filesystems are mounted (the unit's
	// RuntimeDirectory).
	DefaultRunDir = "/run/provisiond/rootfs"
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
	// OnChange is called, from a container's supervisor, when the status
	// of container id changed (it stopped, became healthy or was killed
	// unhealthy) or its restart is due: the caller should Inspect it (and
	// Provision it when Inspect says it vanished). It must not block.
	// Default nil: nobody is told; the next inspection finds it.
	OnChange func(id string)
	// RestartBackoff is the wait before a stopped container is restarted
	// after its first exit within ExitWindow; each further exit doubles
	// it, up to RestartBackoffMax. Defaults DefaultRestartBackoff and
	// DefaultRestartBackoffMax.
	RestartBackoff    time.Duration
	RestartBackoffMax time.Duration
	// Nsenter is the nsenter binary that runs exec health checks. Default
	// "nsenter".
	Nsenter string
	// BootID is the node's boot id: a container that stopped while the
	// node ran another boot stopped with it, which is no crash (it
	// restarts at once, if its policy restarts it, and does not count
	// towards a crash loop). Default the kernel's
	// (/proc/sys/kernel/random/boot_id).
	BootID string
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
	// InsecureRegistries are the registries (HOST:PORT as written in
	// image references) spoken to over plain HTTP; every other registry
	// must speak HTTPS. Default none.
	InsecureRegistries []string
	// RegistryMirrors are registries (HOST:PORT) asked first for every
	// registry image, in order; the digest guarantees their copies.
	// Default none.
	RegistryMirrors []string
	// RegistryAuth holds the credentials of private registries and
	// mirrors (provisiond run --registry-auth). Default nil: registries
	// are asked anonymously.
	RegistryAuth *registry.Auth
	// ImageGrace is how long a registry image's blobs and layers are kept
	// after they were stored although nothing references them, so a
	// just-pulled image survives until its container starts. Default
	// images.DefaultGrace.
	ImageGrace time.Duration
	// Images pulls registry images. Default an images.Store in DataDir
	// with the options above, its blobs and layers bounded by
	// MaxImageSize and MaxImageEntries.
	Images Images
	// Mkfs is the mkfs.ext4 binary that formats the containers' disks.
	// Default "mkfs.ext4".
	Mkfs string
	// PidsLimit caps the processes (threads included) of each container,
	// so a fork bomb stays inside. Default DefaultPidsLimit.
	PidsLimit int64
	// LogMaxSize is the size a container's log file is rotated at, and
	// LogMaxFiles how many files (the current one included) it keeps.
	// Defaults DefaultLogMaxSize and DefaultLogMaxFiles.
	LogMaxSize  int64
	LogMaxFiles int
	// RunDir is where the containers' root filesystems are mounted; it and
	// the directories above it must be searchable by others (runc mounts
	// the root filesystem from inside the container's user namespace).
	// Default DefaultRunDir.
	RunDir string
	// UIDBase is the first host uid and gid of the containers' user
	// namespace ranges (IDRange ids each). Default DefaultUIDBase.
	UIDBase uint32
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
	// Image is a rootfs tarball (an http(s) URL, or an absolute local
	// path below Options.LocalImages) or a registry image pinned by
	// digest (REGISTRY/REPO@sha256:…; see provision.ParseImageRef).
	Image string
	// Digest is the tarball's sha256, or the registry image's digest,
	// lowercase hex.
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
	// DiskSize is the size, in MiB, of the disk the container's root
	// filesystem writes to (at least MinDiskSize).
	DiskSize int64
	// Health is the container's health check; nil for none.
	Health *provision.HealthCheck
	// Restart is its restart policy.
	Restart provision.RestartPolicy
}

// Info describes a container; it is the data of the result, and of a new
// result whenever its status changes.
type Info struct {
	// ID is the container reservation's id.
	ID string `json:"id"`
	// IP is the container's address ("" without a network).
	IP string `json:"ip"`
	// State is StatusRunning, StatusRestarting (it stopped and waits for
	// its restart) or StatusExited (it stopped and its policy leaves it
	// so).
	State string `json:"state,omitempty"`
	// Health is HealthStarting, HealthHealthy or HealthUnhealthy; "" for a
	// container without a health check.
	Health string `json:"health,omitempty"`
	// Restarts counts the node's restarts of the container.
	Restarts int `json:"restarts,omitempty"`
	// LastExit is how it last stopped; nil when it never did.
	LastExit *Exit `json:"last_exit,omitempty"`
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
	onChange   func(id string)
	maxExits   int
	window     time.Duration
	now        func() time.Time
	nsenter    string
	bootID     string

	restartBase time.Duration
	restartMax  time.Duration
	lifeMu      sync.Mutex // serialises the read-modify-writes of lifecycle files

	supMu      sync.Mutex // guards sups and closed
	sups       map[string]*supervisor
	closed     bool
	client     *http.Client
	imageLimit imageLimit
	local      string // Options.LocalImages, absolute and clean; "" serves none
	images     Images
	imageGrace time.Duration
	memsw      bool
	runDir     string
	mkfs       string
	pids       int64
	leases     imageLeases
	log        zerolog.Logger

	idMu    sync.Mutex // serialises uid range allocations
	idBase  uint32
	idSlots uint32

	logMaxSize  int64
	logMaxFiles int
	logMu       sync.Mutex
	pumps       map[string]*logPump
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
	if opts.RestartBackoff <= 0 {
		opts.RestartBackoff = DefaultRestartBackoff
	}
	if opts.RestartBackoffMax <= 0 {
		opts.RestartBackoffMax = DefaultRestartBackoffMax
	}
	if opts.Nsenter == "" {
		opts.Nsenter = "nsenter"
	}
	if opts.BootID == "" {
		opts.BootID = readBootID()
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
	if opts.Mkfs == "" {
		opts.Mkfs = "mkfs.ext4"
	}
	if opts.PidsLimit <= 0 {
		opts.PidsLimit = DefaultPidsLimit
	}
	if opts.LogMaxSize <= 0 {
		opts.LogMaxSize = DefaultLogMaxSize
	}
	if opts.LogMaxFiles <= 0 {
		opts.LogMaxFiles = DefaultLogMaxFiles
	}
	if opts.RunDir == "" {
		opts.RunDir = DefaultRunDir
	}
	if opts.UIDBase == 0 {
		opts.UIDBase = DefaultUIDBase
	}
	if opts.ImageGrace <= 0 {
		opts.ImageGrace = images.DefaultGrace
	}
	if opts.Images == nil {
		opts.Images = newImages(dataDir, &opts)
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
		onChange:   opts.OnChange,
		now:        opts.Now,
		nsenter:    opts.Nsenter,
		bootID:     opts.BootID,

		restartBase: opts.RestartBackoff,
		restartMax:  max(opts.RestartBackoffMax, opts.RestartBackoff),
		sups:        map[string]*supervisor{},
		client:      opts.HTTPClient,
		imageLimit:  imageLimit{bytes: opts.MaxImageSize, entries: opts.MaxImageEntries},
		local:       local,
		images:      opts.Images,
		imageGrace:  opts.ImageGrace,
		memsw:       memswAccounted(),
		mkfs:        opts.Mkfs,
		runDir:      filepath.Clean(opts.RunDir),
		pids:        opts.PidsLimit,
		log:         opts.Log.With().Str("component", "container").Logger(),

		idBase:      opts.UIDBase,
		idSlots:     uint32((1<<32 - 1 - uint64(opts.UIDBase)) / IDRange),
		logMaxSize:  opts.LogMaxSize,
		logMaxFiles: opts.LogMaxFiles,
		pumps:       map[string]*logPump{},
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

// rootfs returns where container id's root filesystem is mounted, in the
// run directory: runc mounts it from inside the user namespace, so every
// directory above it must be searchable by others.
func (m *Manager) rootfs(id string) string { return filepath.Join(m.runDir, Name(id)) }

// checkSearchable creates dir (mode 0711) and checks that it and every
// directory above it are searchable by others.
func checkSearchable(dir string) error {
	if err := mkdirSearchable(dir); err != nil {
		return err
	}
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("container: %s (above the run directory %s) is not searchable by others (mode %v): a container's user namespace cannot reach its root filesystem", d, dir, st.Mode().Perm())
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// mkdirSearchable makes dir and the parents it lacks with mode 0711,
// whatever the umask (the shipped unit's is 0077), and gives dir itself
// that mode if it lacks search by others: the run directory is ours.
func mkdirSearchable(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if d == "/" || d == "." {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	for _, d := range missing {
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o001 == 0 {
		return os.Chmod(dir, st.Mode().Perm()|0o111)
	}
	return nil
}

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// searchableCgroupParents gives the containers' parent cgroup
// ("provisiond", see CgroupsPath) search by others in every hierarchy
// below root where it exists. runc makes it with mkdir(0755), cut by the
// umask of whoever ran first (a release whose unit had UMask=0077 made it
// 0700), and a container in its own user namespace must reach its own
// cgroup below it: runc fails to mount its /sys/fs/cgroup otherwise.
func searchableCgroupParents(root string) error {
	parent := filepath.Dir(CgroupsPath("x"))
	dirs := []string{filepath.Join(root, parent)} // the unified hierarchy (v2)
	if entries, err := os.ReadDir(root); err == nil {
		for _, e := range entries {
			dirs = append(dirs, filepath.Join(root, e.Name(), parent)) // each v1 hierarchy
		}
	}
	for _, d := range dirs {
		st, err := os.Stat(d)
		if err != nil || !st.IsDir() || st.Mode().Perm()&0o001 != 0 {
			continue // absent (made by runc later, with its mode) or already searchable
		}
		if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
			return fmt.Errorf("making cgroup %s searchable: %w", d, err)
		}
	}
	return nil
}

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
	lowers, err := m.ensureLowers(ctx, &s)
	if err != nil {
		return Info{}, err
	}
	name := Name(id)
	info := Info{ID: id}
	if s.NetworkID != "" {
		info.IP = s.IP.To4().String()
	}

	// The supervisor stops while the container is provisioned and starts
	// again when it is ready.
	m.unsupervise(id)
	state, err := m.runc.state(ctx, name)
	if err != nil {
		return Info{}, fmt.Errorf("checking container %s: %w", id, err)
	}
	bundle := m.Bundle(id)
	if legacy, err := isLegacy(bundle); err != nil {
		return Info{}, err
	} else if legacy {
		if state == stateRunning {
			// Started by a release without user namespaces and disks:
			// adopted as it runs; it gets the new layout when it next
			// starts.
			return info, nil
		}
		if err := m.dropLegacy(ctx, id); err != nil {
			return Info{}, err
		}
		state = ""
	}
	if err := os.MkdirAll(bundle, 0o711); err != nil {
		return Info{}, err
	}
	healthChanged := false
	lc, err := m.updateLifecycle(id, func(lc *lifecycle, existed bool) error {
		// A new restart policy applies from the next exit; a new health
		// check, from a new start (below).
		healthChanged = existed && !lc.Health.SameCheck(s.Health)
		lc.Policy, lc.Health, lc.IP = s.Restart, s.Health, info.IP
		if !existed && state != "" {
			// A container of an earlier release is adopted as it is.
			lc.State, lc.Ready, lc.StartedAt = StatusRunning, true, m.now()
			if s.Health != nil {
				lc.HealthState = HealthHealthy
			}
		}
		return nil
	})
	if err != nil {
		return Info{}, err
	}
	if state != stateRunning && lc.State == StatusRunning && !m.rebooted(&lc) {
		// A shim still ending writes its exit code before anything
		// else happens to the container.
		m.waitShim(ctx, id)
	}
	stopped := state == stateStopped || (state == "" && exists(bundle, exitFile))
	restart := false
	if stopped {
		if lc, err = m.recordExit(id); err != nil {
			return Info{}, err
		}
		if lc.State == StatusExited {
			if !lc.Ready {
				return Info{}, provision.Permanentf("%w: container %s stopped before it was ready (%s) and its restart policy is %s",
					ErrUnhealthy, id, lc.LastExit, policyName(s.Restart))
			}
			m.log.Debug().Str("container", id).Msg("container left stopped by its restart policy")
			return statusInfo(id, &lc), nil
		}
		if err := m.crashLoop(ctx, id, &lc); err != nil {
			return Info{}, err
		}
		restart = true
	}

	// A container found (not restarted by its policy) that does not start
	// as it is, below, is recreated for a new version.
	found := state != "" && !restart
	if state, err = m.dropOldImage(ctx, id, bundle, s.Digest, state); err != nil {
		return Info{}, err
	}

	nsPath := ""
	if s.NetworkID != "" {
		if nsPath, err = m.network.Attach(ctx, s.NetworkID, id, s.IP); err != nil {
			return Info{}, err
		}
		if err := setNetSysctls(nsPath); err != nil {
			return Info{}, fmt.Errorf("container %s: %w", id, err)
		}
	}
	base, err := m.uidBase(bundle)
	if err != nil {
		return Info{}, fmt.Errorf("allocating uids of container %s: %w", id, err)
	}
	binds, err := m.mountRootfs(ctx, id, lowers, &s, base)
	if err != nil {
		return Info{}, fmt.Errorf("mounting rootfs of container %s: %w", id, err)
	}
	spec, err := runtimeSpec(name, &s, runtimeOptions{
		rootfs: m.rootfs(id), netns: nsPath, memsw: m.memsw, pids: m.pids, uidBase: base, binds: binds,
	})
	if err != nil {
		return Info{}, provision.Permanent(fmt.Errorf("configuring container %s: %w", id, err))
	}
	if state == stateRunning {
		// An update of its resources only is applied live (update.go).
		if live, err := m.updateLive(ctx, id, bundle, spec); err != nil {
			return Info{}, err
		} else if live {
			if err := m.startLog(id); err != nil {
				return Info{}, fmt.Errorf("taking up the log of container %s: %w", id, err)
			}
			return info, nil
		}
	}
	changed, err := writeConfig(bundle, spec)
	if err != nil {
		return Info{}, fmt.Errorf("writing config of container %s: %w", id, err)
	}
	// A new health check restarts the container, as a new probe rolls a
	// Kubernetes pod: it is judged from a start, by its start period.
	changed = changed || healthChanged
	if state == stateRunning && !changed {
		if err := m.startLog(id); err != nil {
			return Info{}, fmt.Errorf("taking up the log of container %s: %w", id, err)
		}
		if lc.Ready {
			m.supervise(id)
			return statusInfo(id, &lc), nil
		}
		// Started by an operation that ended before it was ready (a
		// daemon restart, a timeout): wait for it below.
	} else {
		if state != "" {
			if err := m.runc.remove(ctx, name); err != nil {
				return Info{}, fmt.Errorf("removing old container %s: %w", id, err)
			}
			if state == stateRunning {
				m.waitShim(ctx, id) // its exit code, written late, would stop the new one
			}
		}
		if found {
			// Recreated for a new version: "ok" again only once it is
			// ready (a version that never is fails, and the Engine rolls
			// back to the one before).
			if lc, err = m.updateLifecycle(id, func(lc *lifecycle, _ bool) error {
				lc.Ready = false
				return nil
			}); err != nil {
				return Info{}, err
			}
		}
		if err := m.start(ctx, id, bundle); err != nil {
			lc, lerr := m.startFailed(id, err)
			if lerr != nil {
				return Info{}, errors.Join(err, lerr)
			}
			if cerr := m.crashLoop(ctx, id, &lc); cerr != nil {
				return Info{}, errors.Join(err, cerr)
			}
			return Info{}, provision.Temporary(err)
		}
		if lc, err = m.started(id, restart); err != nil {
			return Info{}, err
		}
		m.log.Debug().Str("container", id).Str("ip", info.IP).Int("restarts", lc.Restarts).Msg("container started")
	}
	if !lc.Ready {
		if lc, err = m.waitReady(ctx, id, lc); err != nil {
			return Info{}, err
		}
	}
	m.supervise(id)
	return statusInfo(id, &lc), nil
}

// policyName names a restart policy, the default included.
func policyName(p provision.RestartPolicy) string {
	if p == provision.RestartDefault {
		return string(provision.RestartAlways) + " (the default)"
	}
	return string(p)
}

// started records that container id (re)started now.
func (m *Manager) started(id string, restart bool) (lifecycle, error) {
	return m.updateLifecycle(id, func(lc *lifecycle, _ bool) error {
		lc.State, lc.StartedAt, lc.NextStart, lc.Kill = StatusRunning, m.now(), time.Time{}, ""
		lc.BootID = m.bootID
		lc.HealthState = ""
		if lc.Health != nil {
			lc.HealthState = HealthStarting
		} else {
			lc.Ready = true
		}
		if restart {
			lc.Restarts++
		}
		return nil
	})
}

// startFailed records a start of container id that failed as an exit (it
// counts towards a crash loop).
func (m *Manager) startFailed(id string, cause error) (lifecycle, error) {
	return m.updateLifecycle(id, func(lc *lifecycle, _ bool) error {
		now := m.now()
		lc.LastExit = &Exit{Code: UnknownExitCode, At: now, Reason: provision.Truncate("start failed: "+cause.Error(), 512)}
		lc.Exits = append(m.inWindow(lc.Exits, now), now)
		return nil
	})
}

// waitReady waits until container id's health check passes for the first
// time: it runs the check every second (or its interval, if shorter) for
// its start period. A container that stops meanwhile fails (temporarily,
// unless its policy is never); one whose check does not pass in time
// fails for good with an error naming the check.
func (m *Manager) waitReady(ctx context.Context, id string, lc lifecycle) (lifecycle, error) {
	h := lc.Health
	if h == nil {
		return m.updateLifecycle(id, func(lc *lifecycle, _ bool) error {
			lc.Ready = true
			return nil
		})
	}
	bundle := m.Bundle(id)
	deadline := lc.StartedAt.Add(h.StartPeriodOrDefault())
	every := min(time.Second, h.IntervalOrDefault())
	for {
		err := m.check(ctx, id, h, lc.IP)
		if err == nil {
			return m.updateLifecycle(id, func(lc *lifecycle, _ bool) error {
				lc.Ready, lc.HealthState = true, HealthHealthy
				return nil
			})
		}
		if ctx.Err() != nil {
			return lc, fmt.Errorf("waiting for container %s to be ready: %w", id, ctx.Err())
		}
		st, serr := m.runc.state(ctx, Name(id))
		if serr != nil {
			return lc, fmt.Errorf("checking container %s: %w", id, serr)
		}
		if st != stateRunning || exists(bundle, exitFile) {
			m.waitShim(ctx, id)
			lc, rerr := m.recordExit(id)
			if rerr != nil {
				return lc, rerr
			}
			err := fmt.Errorf("%w: container %s stopped before its health check %s passed: %s", ErrUnhealthy, id, h, lc.LastExit)
			if lc.State == StatusExited {
				return lc, provision.Permanent(err)
			}
			return lc, provision.Temporary(err)
		}
		if !m.now().Before(deadline) {
			return lc, provision.Permanentf("%w: container %s: health check %s did not pass within %s: %v", ErrUnhealthy, id, h, h.StartPeriodOrDefault(), err)
		}
		m.log.Debug().Err(err).Str("container", id).Msg("container not ready yet")
		if !backoff.Sleep(ctx, every) {
			return lc, fmt.Errorf("waiting for container %s to be ready: %w", id, ctx.Err())
		}
	}
}

// statusInfo is the Info of container id by its lifecycle.
func statusInfo(id string, lc *lifecycle) Info {
	return Info{ID: id, IP: lc.IP, State: lc.State, Health: lc.HealthState, Restarts: lc.Restarts, LastExit: lc.LastExit}
}

// waitShim waits, for at most 2 s, for the shim of container id, whose
// container stopped or was just deleted, to write its exit code, so that
// it writes nothing into a bundle being removed or over the exit of the
// next run. A container that never ran under a shim, or whose shim wrote
// its code, is not waited for; one whose shim died (a reboot) is, in
// vain.
func (m *Manager) waitShim(ctx context.Context, id string) {
	bundle := m.Bundle(id)
	if !exists(bundle, pidFile) || exists(bundle, exitFile) {
		return
	}
	for range 40 {
		if exists(bundle, exitFile) || !backoff.Sleep(ctx, 50*time.Millisecond) {
			return
		}
	}
	m.log.Warn().Str("container", id).Msg("the shim of a deleted container wrote no exit code")
}

func (m *Manager) start(ctx context.Context, id, bundle string) error {
	if err := os.MkdirAll(m.runc.root, 0o700); err != nil {
		return err
	}
	if err := searchableCgroupParents(cgroupRoot); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	pipe, err := openLogPipe(bundle, false)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	defer pipe.Close()
	if err := m.startLog(id); err != nil {
		return fmt.Errorf("starting the log of container %s: %w", id, err)
	}
	if err := m.runc.start(ctx, Name(id), bundle, pipe, m.LogPath(id)); err != nil {
		// Do not leave a half-made runc container behind.
		if rerr := m.runc.remove(context.WithoutCancel(ctx), Name(id)); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	return nil
}

// mountRootfs mounts what container id runs on, each unless it is mounted:
// its disk, the image idmapped to the container's uids (at <bundle>/lower,
// or a registry image's layers at <bundle>/layers/<i>; see mountLowers),
// the overlay of both at <bundle>/rootfs, and each volume idmapped at
// <bundle>/vols/<i>. It returns the volumes' idmapped sources, in order.
func (m *Manager) mountRootfs(ctx context.Context, id string, image []string, s *Spec, base uint32) ([]string, error) {
	bundle := m.Bundle(id)
	disk, err := m.ensureDisk(ctx, bundle, s.DiskSize, base)
	if err != nil {
		return nil, err
	}
	lower, err := mountLowers(bundle, image, provision.IsImageRef(s.Image), base)
	if err != nil {
		return nil, err
	}
	var binds []string
	for i, mt := range s.Mounts {
		p := filepath.Join(bundle, "vols", strconv.Itoa(i))
		if err := idmapMount(mt.Source, p, base); err != nil {
			return nil, fmt.Errorf("volume on %s: %w", mt.Destination, err)
		}
		binds = append(binds, p)
	}
	rootfs := m.rootfs(id)
	if err := checkSearchable(m.runDir); err != nil {
		return nil, err
	}
	if mnt, ok, err := mounts.Find(rootfs); err != nil {
		return nil, err
	} else if ok && mnt.FSType == "overlay" {
		return binds, nil
	}
	if err := os.MkdirAll(rootfs, 0o711); err != nil {
		return nil, err
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, filepath.Join(disk, "upper"), filepath.Join(disk, "work"))
	if len(opts) > maxOverlayOptions {
		return nil, provision.Permanentf("%w: %d layers make overlay options longer than a page (a shorter --data-dir helps)", ErrBadImage, len(image))
	}
	return binds, unix.Mount("overlay", rootfs, "overlay", 0, opts)
}

// isLegacy reports whether bundle was made by a release without user
// namespaces and disks: it has a config but no uid range.
func isLegacy(bundle string) (bool, error) {
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	_, ok, err := readUIDBase(bundle)
	return !ok && err == nil, err
}

// dropLegacy removes the stopped container of an old release's bundle and
// the bundle, so that it starts again in the new layout. What it wrote to
// its root filesystem (its volumes are kept) does not carry over.
func (m *Manager) dropLegacy(ctx context.Context, id string) error {
	if err := m.runc.remove(ctx, Name(id)); err != nil {
		return fmt.Errorf("removing old container %s: %w", id, err)
	}
	if err := m.unmountAll(id); err != nil {
		return err
	}
	if err := os.RemoveAll(m.Bundle(id)); err != nil {
		return fmt.Errorf("removing old bundle of container %s: %w", id, err)
	}
	m.log.Info().Str("container", id).Msg("container of an earlier release starts again with a user namespace and its own disk")
	return nil
}

// unmountAll unmounts everything of container id's bundle, the rootfs
// first, and checks that nothing under the bundle is still mounted (its
// removal would otherwise reach into a volume).
func (m *Manager) unmountAll(id string) error {
	bundle := m.Bundle(id)
	// (rootfs in the bundle is where an earlier release mounted it.)
	points := []string{m.rootfs(id), filepath.Join(bundle, "rootfs"), filepath.Join(bundle, "lower")}
	vols, err := os.ReadDir(filepath.Join(bundle, "vols"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, v := range vols {
		points = append(points, filepath.Join(bundle, "vols", v.Name()))
	}
	layers, err := layerMounts(bundle)
	if err != nil {
		return err
	}
	points = append(points, layers...)
	for _, p := range points {
		if err := mounts.Unmount(p); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
	}
	if err := unmountDisk(bundle); err != nil {
		return fmt.Errorf("container %s: unmounting disk: %w", id, err)
	}
	if err := os.Remove(m.rootfs(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	ms, err := mounts.List()
	if err != nil {
		return err
	}
	for _, mt := range ms {
		if mt.Point == bundle || strings.HasPrefix(mt.Point, bundle+"/") {
			return fmt.Errorf("container %s: %s is still mounted", id, mt.Point)
		}
	}
	return nil
}

// Inspect returns nil when container id runs, or stopped and its restart
// policy leaves it stopped or its restart is not due yet (its supervisor
// tells OnChange when it is); an error wrapping provision.ErrVanished when
// its restart is due, or it is gone (Provision runs it again). It takes up
// the log and the supervision of a container a daemon restart left.
func (m *Manager) Inspect(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	state, err := m.runc.state(ctx, Name(id))
	if err != nil {
		return fmt.Errorf("inspecting container %s: %w", id, err)
	}
	bundle := m.Bundle(id)
	if state == stateRunning {
		if err := m.startLog(id); err != nil {
			m.log.Warn().Err(err).Str("container", id).Msg("taking up the container's log")
		}
		if _, ok, err := m.loadLifecycle(id); err != nil {
			return fmt.Errorf("inspecting container %s: %w", id, err)
		} else if ok {
			m.supervise(id)
		}
		return nil
	}
	lc, ok, err := m.loadLifecycle(id)
	if err != nil {
		return fmt.Errorf("inspecting container %s: %w", id, err)
	}
	if ok && lc.State == StatusRunning && !m.rebooted(&lc) {
		// runc says "stopped" a moment before the shim writes the exit
		// code.
		m.waitShim(ctx, id)
	}
	stopped := state == stateStopped || (state == "" && exists(bundle, exitFile))
	if !ok || !stopped {
		if state == "" {
			return fmt.Errorf("inspecting container %s: %w: no such container", id, provision.ErrVanished)
		}
		return fmt.Errorf("inspecting container %s: %w: %s", id, provision.ErrVanished, state)
	}
	if lc.State == StatusRunning {
		if lc, err = m.recordExit(id); err != nil {
			return fmt.Errorf("inspecting container %s: %w", id, err)
		}
	}
	switch {
	case lc.State == StatusExited:
		return nil
	case !m.now().Before(lc.NextStart):
		return fmt.Errorf("inspecting container %s: %w: stopped (%s), its restart is due", id, provision.ErrVanished, lc.LastExit)
	}
	m.supervise(id) // it tells OnChange when the restart is due
	return nil
}

// Status returns the status of container id as its lifecycle says (after
// an Inspect, which records an exit it finds). A container without one (an
// earlier release's, adopted as it runs) has none: ErrNoStatus, and its
// result stays the one that release signed.
func (m *Manager) Status(ctx context.Context, id string) (Info, error) {
	if err := checkID(id); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	lc, ok, err := m.loadLifecycle(id)
	if err != nil {
		return Info{}, fmt.Errorf("reading status of container %s: %w", id, err)
	}
	if !ok {
		return Info{}, fmt.Errorf("%w: container %s", ErrNoStatus, id)
	}
	return statusInfo(id, &lc), nil
}

// Decommission kills and deletes container id, detaches it from its
// network, unmounts its rootfs and removes its bundle and log. An absent
// container is success.
func (m *Manager) Decommission(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	m.unsupervise(id)
	if err := m.runc.remove(ctx, Name(id)); err != nil {
		return fmt.Errorf("deleting container %s: %w", id, err)
	}
	m.waitShim(ctx, id)
	m.stopLog(id)
	if m.network != nil {
		if err := m.network.Detach(ctx, id); err != nil {
			return err
		}
	}
	if err := m.unmountAll(id); err != nil {
		return err
	}
	if err := os.RemoveAll(m.Bundle(id)); err != nil {
		return fmt.Errorf("removing bundle of container %s: %w", id, err)
	}
	if err := m.removeLogs(id); err != nil {
		return fmt.Errorf("removing log of container %s: %w", id, err)
	}
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
			name, _, _ := strings.Cut(e.Name(), ".log")
			add(name)
		}
	}
	return ids, nil
}
