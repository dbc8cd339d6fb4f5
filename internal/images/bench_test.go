package images_test

import (
	"os"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/images"
	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/internal/registrytest"
	"github.com/edgeprov/provisiond/internal/testutil"
)

// BenchmarkPullCold pulls a 50 MB image into an empty store (fetch,
// check, fsync, unpack, syncfs), alternating with curl + tar -xzf of the
// same blobs: the image store's share of a cold container start.
func BenchmarkPullCold(b *testing.B) {
	testutil.RequiresRoot(b)
	reg := registrytest.Start(b, registrytest.Options{})
	ref, img := registrytest.BigImage(b, reg)
	var ours, curl []time.Duration
	pull := func() {
		dir := b.TempDir()
		s := images.New(images.Options{Dir: dir, Registry: registry.New(registry.Options{Insecure: []string{reg.Host}}), Limit: limit})
		start := time.Now()
		if _, err := s.Pull(b.Context(), ref); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(start))
		os.RemoveAll(dir)
	}
	curlTar := func() { curl = append(curl, registrytest.CurlTar(b, reg, ref, img)) }
	for b.Loop() {
		// Five pairs an iteration (one lasts about a second), which goes
		// first alternating.
		for j := range 5 {
			if j%2 == 0 {
				pull()
				curlTar()
			} else {
				curlTar()
				pull()
			}
		}
	}
	b.ReportMetric(registrytest.MedianMs(ours), "p50-ms")
	b.ReportMetric(registrytest.MedianMs(curl), "curl-tar-p50-ms")
	b.ReportMetric(registrytest.MedianMs(ours)/registrytest.MedianMs(curl), "ratio")
}
