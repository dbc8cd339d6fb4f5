package images_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgeprov/provisiond/internal/images"
	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/internal/registrytest"
	"github.com/edgeprov/provisiond/internal/testutil"
)

func medianMs(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}

// BenchmarkPullCold pulls a 50 MB image into an empty store (fetch,
// check, fsync, unpack, syncfs), alternating with curl + tar -xzf of the
// same blobs: the image store's share of a cold container start.
func BenchmarkPullCold(b *testing.B) {
	testutil.RequiresRoot(b)
	testutil.RequiresCommand(b, "curl")
	reg := registrytest.Start(b, registrytest.Options{})
	data := make([]byte, 50<<20)
	rand.Read(data)
	img := registrytest.Image(b, runtime.GOARCH, registrytest.BusyboxLayer(b),
		registrytest.Layer(b, []registrytest.File{{Name: "data/", Type: '5'}, {Name: "data/blob", Body: data}}))
	ref := reg.Push(b, "big", img)
	cfgName, _ := img.ConfigName()
	layers, _ := img.Layers()
	var ours, curl []time.Duration
	for b.Loop() {
		dir := b.TempDir()
		s := images.New(images.Options{Dir: dir, Registry: registry.New(registry.Options{Insecure: []string{reg.Host}}), Limit: limit})
		start := time.Now()
		if _, err := s.Pull(b.Context(), ref); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(start))
		os.RemoveAll(dir)

		dir = b.TempDir()
		rootfs := filepath.Join(dir, "rootfs")
		os.Mkdir(rootfs, 0o755)
		start = time.Now()
		blob := func(d v1.Hash) string {
			p := filepath.Join(dir, d.Hex)
			url := fmt.Sprintf("http://%s/v2/%s/blobs/%s", reg.Host, ref.Repository, d)
			if out, err := exec.Command("curl", "-sSfL", "-o", p, url).CombinedOutput(); err != nil {
				b.Fatalf("curl: %v %s", err, out)
			}
			return p
		}
		blob(cfgName)
		for _, l := range layers {
			d, _ := l.Digest()
			if out, err := exec.Command("tar", "-xzf", blob(d), "-C", rootfs).CombinedOutput(); err != nil {
				b.Fatalf("tar: %v %s", err, out)
			}
		}
		curl = append(curl, time.Since(start))
		os.RemoveAll(dir)
	}
	b.ReportMetric(medianMs(ours), "p50-ms")
	b.ReportMetric(medianMs(curl), "curl-tar-p50-ms")
	b.ReportMetric(medianMs(ours)/medianMs(curl), "ratio")
}
