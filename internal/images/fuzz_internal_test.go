package images

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgeprov/provisiond/internal/content"
	"github.com/edgeprov/provisiond/provision"
)

// FuzzManifest checks that a manifest or index from a registry never
// panics the node, and that what parseManifest and pick accept names only
// sha256 digests of 64 hex digits (which become store paths).
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":1,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}]}`))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:../../x","platform":{"os":"linux","architecture":"amd64"}}]}`))
	ref := provision.ImageRef{Registry: "r.example", Repository: "a", Digest: "00"}
	s := &Store{platform: v1.Platform{OS: "linux", Architecture: "amd64"}}
	f.Fuzz(func(t *testing.T, b []byte) {
		if isIndex(b) {
			d, err := s.pick(ref, b)
			if err == nil && content.CheckDigest(d) != nil {
				t.Fatalf("pick accepted digest %q", d)
			}
			return
		}
		m, err := parseManifest(ref, b)
		if err != nil {
			return
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if content.CheckDigest(d.Digest.Hex) != nil || d.Size < 0 {
				t.Fatalf("parseManifest accepted descriptor %+v", d)
			}
		}
		if len(m.Layers) == 0 || len(m.Layers) > MaxLayers {
			t.Fatalf("parseManifest accepted %d layers", len(m.Layers))
		}
	})
}
