package container

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/internal/content"
	"github.com/edgeprov/provisiond/internal/images"
	"github.com/edgeprov/provisiond/internal/layer"
	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/primitives/internal/mounts"
	"github.com/edgeprov/provisiond/provision"
)

// Registry images. A Spec.Image that is a registry reference
// (REGISTRY/REPO@sha256:…) is pulled by the Images store into
// <DataDir>/blobs and unpacked layer by layer into <DataDir>/layers, each
// layer once for every image and container that uses it. A container
// mounts each of its image's layers idmapped to its own uid range at
// <bundle>/layers/<i> (one user namespace file serves them all) and
// stacks them with overlay's lowerdir=top:…:base; OCI whiteouts were
// turned into overlay's at unpack time, so overlay itself hides what upper
// layers delete. A merged copy per container would cost the image's size
// on disk and time per container; idmapped mounts of the shared
// directories cost neither.

// Images fetches and unpacks registry images; *images.Store is one.
type Images interface {
	// Layers makes the image of ref present and returns its layer
	// directories, the top layer first.
	Layers(ctx context.Context, ref provision.ImageRef) ([]string, error)
}

var _ Images = (*images.Store)(nil)

// layersDir is where a bundle's idmapped layer mounts are.
const layersDir = "layers"

// maxOverlayOptions is the most bytes overlay's mount options may take
// (one page).
const maxOverlayOptions = 4095

// newImages returns the default image store of opts.
func newImages(dataDir string, opts *Options) *images.Store {
	// The operator vouches for the registries and mirrors it lists: they
	// may be on the node's own network.
	allow := append([]string{}, opts.ImageHosts...)
	for _, h := range append(append([]string{}, opts.InsecureRegistries...), opts.RegistryMirrors...) {
		if host, _, err := net.SplitHostPort(h); err == nil {
			allow = append(allow, host)
		} else {
			allow = append(allow, h)
		}
	}
	return images.New(images.Options{
		Dir: dataDir,
		Registry: registry.New(registry.Options{
			Transport: newImageGuard(allow).client().Transport,
			Insecure:  opts.InsecureRegistries,
			Mirrors:   opts.RegistryMirrors,
			Auth:      opts.RegistryAuth,
			Log:       opts.Log,
		}),
		Limit: layer.Limit{Bytes: opts.MaxImageSize, Entries: opts.MaxImageEntries},
		Log:   opts.Log,
	})
}

// ensureLowers returns the directories of the image of s, top first: the
// registry image's layers, or the one directory of an unpacked tar image.
func (m *Manager) ensureLowers(ctx context.Context, s *Spec) ([]string, error) {
	if !provision.IsImageRef(s.Image) {
		dir, err := m.ensureImage(ctx, s.Image, s.Digest)
		if err != nil {
			return nil, err
		}
		return []string{dir}, nil
	}
	ref, err := provision.ParseImageRef(s.Image)
	if err != nil {
		return nil, provision.Permanentf("%w: %w", ErrBadImage, err)
	}
	if ref.Digest != s.Digest {
		return nil, provision.Permanentf("%w: the image reference's digest is not %s", ErrBadDigest, s.Digest)
	}
	lowers, err := m.images.Layers(ctx, ref)
	if err != nil {
		return nil, imageError(ctx, ref, err)
	}
	return lowers, nil
}

// imageError turns a pull's failure into the Provision's: temporary when
// the registry is down or overloaded, permanent otherwise, wrapping the
// package's sentinel that says what went wrong.
func imageError(ctx context.Context, ref provision.ImageRef, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if registry.Temporary(err) {
		return provision.Temporary(fmt.Errorf("pulling image %s: %w", ref, err))
	}
	var kind error
	switch {
	case errors.Is(err, registry.ErrNotFound):
		kind = ErrImageNotFound
	case errors.Is(err, images.ErrTooLarge), errors.Is(err, layer.ErrTooLarge):
		kind = ErrImageTooLarge
	case errors.Is(err, content.ErrDigestMismatch), errors.Is(err, registry.ErrDigestMismatch),
		errors.Is(err, content.ErrTampered), errors.Is(err, images.ErrDiffID):
		kind = ErrDigestMismatch
	case errors.Is(err, registry.ErrUnauthorized), errors.Is(err, registry.ErrPlainHTTP):
		kind = ErrImageRefused
	case errors.Is(err, registry.ErrMediaType), errors.Is(err, images.ErrBadManifest),
		errors.Is(err, images.ErrNoPlatform), errors.Is(err, content.ErrSizeMismatch):
		kind = ErrBadImage
	default:
		// A local failure (disk, permissions): worth another try.
		return provision.Temporary(fmt.Errorf("pulling image %s: %w", ref, err))
	}
	return provision.Permanentf("%w: pulling image %s: %w", kind, ref, err)
}

// mountLowers mounts the image directories lowers (top first) idmapped to
// base for container bundle, and returns overlay's lowerdir option. A
// tar image keeps its single mount at <bundle>/lower; a registry image's
// layers go to <bundle>/layers/<i>.
func mountLowers(bundle string, lowers []string, registryImage bool, base uint32) (string, error) {
	if !registryImage {
		lower := filepath.Join(bundle, "lower")
		if err := idmapMount(lowers[0], lower, base); err != nil {
			return "", err
		}
		return lower, nil
	}
	var ns *os.File
	defer func() {
		if ns != nil {
			ns.Close()
		}
	}()
	targets := make([]string, len(lowers))
	for i, src := range lowers {
		// Numbered base first, so a layer keeps its directory whatever
		// the number of layers above it.
		targets[i] = filepath.Join(bundle, layersDir, strconv.Itoa(len(lowers)-1-i))
		if err := os.MkdirAll(targets[i], 0o700); err != nil {
			return "", err
		}
		if _, mounted, err := mounts.Find(targets[i]); err != nil {
			return "", err
		} else if mounted {
			continue
		}
		if ns == nil {
			f, err := usernsFile(base)
			if err != nil {
				return "", err
			}
			ns = f
		}
		if err := idmapMountNS(src, targets[i], ns); err != nil {
			return "", err
		}
	}
	return strings.Join(targets, ":"), nil
}

// idmapMountNS mounts a clone of directory src at target, idmapped
// through the user namespace file ns.
func idmapMountNS(src, target string, ns *os.File) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("cloning %s: %w", src, err)
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_NODEV, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("idmapping %s (needs Linux 5.12+, 5.19+ under overlay, and a filesystem that supports it): %w", src, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mounting idmapped %s on %s: %w", src, target, err)
	}
	return nil
}

// layerMounts returns a bundle's layer mount points.
func layerMounts(bundle string) ([]string, error) {
	es, err := os.ReadDir(filepath.Join(bundle, layersDir))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	var out []string
	for _, e := range es {
		out = append(out, filepath.Join(bundle, layersDir, e.Name()))
	}
	return out, nil
}

// registrySweeper is an Images that can collect what no image reaches;
// *images.Store is one.
type registrySweeper interface {
	Sweep(ctx context.Context, keep func(digest string) bool, inUse map[string]bool, grace time.Duration) (images.SweepResult, error)
}

// sweepRegistry collects the registry images' blobs and layers that no
// kept or leased image reaches and no container mounts.
func (s *ImageSweep) sweepRegistry(ctx context.Context, keep func(string) bool, res *SweepResult) error {
	m := s.m
	sw, ok := m.images.(registrySweeper)
	if !ok {
		return nil
	}
	leased := map[string]bool{}
	m.leases.mu.Lock()
	for d := range m.leases.held {
		leased[d] = true
	}
	for d, mark := range m.leases.last {
		if mark >= s.mark {
			leased[d] = true
		}
	}
	m.leases.mu.Unlock()
	inUse, err := m.mountedLayers()
	if err != nil {
		return fmt.Errorf("listing the layers containers use: %w", err)
	}
	r, err := sw.Sweep(ctx, func(d string) bool { return keep(d) || leased[d] }, inUse, m.imageGrace)
	res.Blobs, res.Layers = r.Blobs, r.Layers
	res.Temporary += r.Temporary
	res.Bytes += r.Bytes
	if err != nil {
		return fmt.Errorf("sweeping registry images: %w", err)
	}
	return nil
}

// mountedLayers returns the digests of the layers containers mount now:
// an idmapped mount at <bundle>/layers/<i> whose root is a layer's "fs".
func (m *Manager) mountedLayers() (map[string]bool, error) {
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, mi := range infos {
		if filepath.Base(filepath.Dir(mi.Mountpoint)) != layersDir || !strings.HasPrefix(mi.Mountpoint, m.bundlesDir+"/") {
			continue
		}
		if d := filepath.Base(filepath.Dir(mi.Root)); isDigest(d) {
			used[d] = true
		}
	}
	return used, nil
}
