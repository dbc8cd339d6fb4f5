package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edgeprov/provisiond/primitives/internal/mounts"
)

// Updates of a running container. A new version of a container
// reservation comes to Provision like any other: what only changes its
// resources (CPU, memory) is applied live with `runc update`, the process
// keeps running; anything else (image, entrypoint, env) recreates the
// container with the same IP, volumes and disk (what it wrote to its root
// filesystem stays, over the new image when the image changed).

// imageMarker is the file in a bundle that names the image digest its
// rootfs is mounted from.
const imageMarker = "image-digest"

// updateLive applies spec to the running container id when it differs
// from the bundle's config only in Linux.Resources: `runc update` with the
// new resources, then the config is written. It reports whether it did.
func (m *Manager) updateLive(ctx context.Context, id, bundle string, spec *specs.Spec) (bool, error) {
	raw, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	var old specs.Spec
	if err := json.Unmarshal(raw, &old); err != nil || old.Linux == nil || spec.Linux == nil {
		return false, nil // not ours to patch: recreate
	}
	if reflect.DeepEqual(old.Linux.Resources, spec.Linux.Resources) || !sameBesidesResources(&old, spec) {
		return false, nil
	}
	r := spec.Linux.Resources
	res, err := json.Marshal(&specs.LinuxResources{Memory: r.Memory, CPU: r.CPU, Pids: r.Pids})
	if err != nil {
		return false, err
	}
	cmd := m.runc.command(ctx, "update", "--resources", "-", Name(id))
	cmd.Stdin = bytes.NewReader(res)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return false, fmt.Errorf("runc update %s: %w: %s", Name(id), err, bytes.TrimSpace(stderr.Bytes()))
	}
	if _, err := writeConfig(bundle, spec); err != nil {
		return false, fmt.Errorf("writing config of container %s: %w", id, err)
	}
	m.log.Info().Str("container", id).Msg("container resources updated live")
	return true, nil
}

// sameBesidesResources reports whether a and b are equal once their
// Linux.Resources are set aside.
func sameBesidesResources(a, b *specs.Spec) bool {
	ac, bc := *a, *b
	al, bl := *a.Linux, *b.Linux
	al.Resources, bl.Resources = nil, nil
	ac.Linux, bc.Linux = &al, &bl
	ja, err1 := json.Marshal(&ac)
	jb, err2 := json.Marshal(&bc)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// dropOldImage prepares container id, whose runc state is state, for the
// image digest: when its bundle names another image, the container is
// removed and its rootfs and image mounts undone, so that it is made again
// on the new image; it returns
// the container's state then (""). The bundle then names digest.
func (m *Manager) dropOldImage(ctx context.Context, id, bundle, digest, state string) (string, error) {
	marker := filepath.Join(bundle, imageMarker)
	old, err := os.ReadFile(marker)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Made before the marker (or new): it runs what it was made with.
	case err != nil:
		return state, err
	case string(old) != digest:
		if err := m.runc.remove(ctx, Name(id)); err != nil {
			return state, fmt.Errorf("removing container %s for its new image: %w", id, err)
		}
		for _, p := range []string{m.rootfs(id), filepath.Join(bundle, "lower")} {
			if err := mounts.Unmount(p); err != nil {
				return state, fmt.Errorf("container %s: %w", id, err)
			}
		}
		m.log.Info().Str("container", id).Str("image", digest).Msg("container recreated on a new image")
		state = ""
	}
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return state, err
	}
	tmp := marker + ".tmp"
	if err := os.WriteFile(tmp, []byte(digest), 0o600); err != nil {
		return state, err
	}
	return state, os.Rename(tmp, marker)
}
