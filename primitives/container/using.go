package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edgeprov/provisiond/provision"
)

// maxConfigSize bounds the config.json Using reads (ours are a few KiB).
const maxConfigSize = 1 << 20

// Using returns the ids of the containers whose bundle bind-mounts the
// host directory source (a volume's mount). A container counts while its
// bundle exists, running or not: a live container that stopped is run
// again on the same mounts, and Decommission removes the bundle last.
func (m *Manager) Using(ctx context.Context, source string) ([]string, error) {
	entries, err := os.ReadDir(m.bundlesDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	source = filepath.Clean(source)
	var ids []string
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		id, ok := strings.CutPrefix(e.Name(), provision.Prefix)
		if !ok || !e.IsDir() {
			continue
		}
		b, err := readLimited(filepath.Join(m.bundlesDir, e.Name(), "config.json"), maxConfigSize)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a bundle being made or removed: no mounts yet or any more
		}
		if err != nil {
			return nil, fmt.Errorf("reading config of container %s: %w", id, err)
		}
		var spec specs.Spec
		if err := json.Unmarshal(b, &spec); err != nil {
			return nil, fmt.Errorf("reading config of container %s: %w", id, err)
		}
		if usesVolume(&spec, source) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// volumeAnnotation, followed by the mount's index, names the volume a
// container's bind mount comes from: the bind's own source is the
// volume's idmapped mount in the bundle (see mountRootfs).
const volumeAnnotation = "org.edgeprov.provisiond.volume."

// usesVolume reports whether spec mounts the volume mounted at source:
// named in an annotation, or bound directly (a bundle of a release
// before user namespaces).
func usesVolume(spec *specs.Spec, source string) bool {
	for k, v := range spec.Annotations {
		if strings.HasPrefix(k, volumeAnnotation) && filepath.Clean(v) == source {
			return true
		}
	}
	for _, mt := range spec.Mounts {
		if mt.Type == "bind" && filepath.Clean(mt.Source) == source {
			return true
		}
	}
	return false
}

func readLimited(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", p, st.Size(), limit)
	}
	return os.ReadFile(p)
}
