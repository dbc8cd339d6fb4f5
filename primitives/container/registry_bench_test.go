package container_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/registrytest"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/provision"
)

// samplesPerLoop is how many pairs of samples one iteration of a start
// benchmark takes: one iteration lasts about a second, and a median needs
// more than BENCH_TIME=1s would give.
const samplesPerLoop = 5

// BenchmarkRegistryColdStart measures a cold start of a 50 MB image from a
// registry on 127.0.0.1 (manifest, config and layers fetched, checked,
// stored with fsync, unpacked, the container run, then decommissioned),
// alternating (which goes first, too) with `curl` fetching the same blobs
// and `tar -xzf` extracting the layers: p50-ms, curl-tar-p50-ms and their
// ratio.
func BenchmarkRegistryColdStart(b *testing.B) {
	reg := registrytest.Start(b, registrytest.Options{})
	ref, img := registrytest.BigImage(b, reg)
	e := newEnv(b, container.Options{InsecureRegistries: []string{reg.Host}})
	var ours, curl []time.Duration
	coldStart := func(id string) {
		start := time.Now()
		if _, err := e.m.Provision(b.Context(), id, refSpec(ref, "/bin/sleep", "60")); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(start))
		if err := e.m.Decommission(b.Context(), id); err != nil {
			b.Fatal(err)
		}
		for _, d := range []string{"blobs", "layers"} {
			if err := os.RemoveAll(filepath.Join(e.dir, d)); err != nil {
				b.Fatal(err)
			}
		}
	}
	curlTar := func() { curl = append(curl, registrytest.CurlTar(b, reg, ref, img)) }
	for i := 0; b.Loop(); i++ {
		for j := range samplesPerLoop {
			id := fmt.Sprintf("cold-%d-%d", i, j)
			if j%2 == 0 {
				coldStart(id)
				curlTar()
			} else {
				curlTar()
				coldStart(id)
			}
		}
	}
	b.ReportMetric(registrytest.MedianMs(ours), "p50-ms")
	b.ReportMetric(registrytest.MedianMs(curl), "curl-tar-p50-ms")
	b.ReportMetric(registrytest.MedianMs(ours)/registrytest.MedianMs(curl), "ratio")
}

// BenchmarkRegistryWarmStart measures a warm start (layers present) of a
// registry image, provision and decommission, alternating with the same
// for a local rootfs tar already unpacked: p50-ms, local-tar-p50-ms and
// their ratio.
func BenchmarkRegistryWarmStart(b *testing.B) {
	reg := registrytest.Start(b, registrytest.Options{})
	e := newEnv(b, container.Options{InsecureRegistries: []string{reg.Host}})
	// The same busybox rootfs as the local tar, as one registry layer.
	ref := reg.Push(b, "busybox", registrytest.Image(b, runtime.GOARCH, registrytest.BusyboxLayer(b)))
	warm := func(id string, s container.Spec) time.Duration {
		start := time.Now()
		if _, err := e.m.Provision(b.Context(), id, s); err != nil {
			b.Fatal(err)
		}
		if err := e.m.Decommission(b.Context(), id); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	warm("warm-reg", refSpec(ref, "/bin/sleep", "60"))
	warm("warm-tar", e.spec("/bin/sleep", "60"))
	var ours, tar []time.Duration
	for i := 0; b.Loop(); i++ {
		for j := range samplesPerLoop {
			// Which goes first alternates: the second of a pair may
			// meet what the first left to the kernel (loop device
			// release).
			reg, tr := fmt.Sprintf("reg-%d-%d", i, j), fmt.Sprintf("tar-%d-%d", i, j)
			if j%2 == 0 {
				ours = append(ours, warm(reg, refSpec(ref, "/bin/sleep", "60")))
				tar = append(tar, warm(tr, e.spec("/bin/sleep", "60")))
			} else {
				tar = append(tar, warm(tr, e.spec("/bin/sleep", "60")))
				ours = append(ours, warm(reg, refSpec(ref, "/bin/sleep", "60")))
			}
		}
	}
	b.ReportMetric(registrytest.MedianMs(ours), "p50-ms")
	b.ReportMetric(registrytest.MedianMs(tar), "local-tar-p50-ms")
	b.ReportMetric(registrytest.MedianMs(ours)/registrytest.MedianMs(tar), "ratio")
}

// BenchmarkSharedBaseTransfer pulls two images sharing a busybox base
// through a counting proxy and reports the blob bytes the second one
// transferred against the size of its own layer and config (ratio 1: only
// what it does not share).
func BenchmarkSharedBaseTransfer(b *testing.B) {
	reg := registrytest.Start(b, registrytest.Options{})
	proxy := registrytest.StartProxy(b, reg.Host)
	e := newEnv(b, container.Options{InsecureRegistries: []string{proxy.Host}})
	base := registrytest.BusyboxLayer(b)
	own := registrytest.Layer(b, []registrytest.File{{Name: "srv/", Type: '5'}, {Name: "srv/b", Body: make([]byte, 1<<20)}})
	imgA := registrytest.Image(b, runtime.GOARCH, base, registrytest.Layer(b, []registrytest.File{{Name: "srv/", Type: '5'}, {Name: "srv/a", Body: []byte("a")}}))
	imgB := registrytest.Image(b, runtime.GOARCH, base, own)
	var second, ownBytes int64
	for i := 0; b.Loop(); i++ {
		// Fresh repositories each time, so that nothing is cached.
		a := reg.Push(b, fmt.Sprintf("a%d", i), imgA)
		bb := reg.Push(b, fmt.Sprintf("b%d", i), imgB)
		a.Registry, bb.Registry = proxy.Host, proxy.Host
		for _, d := range []string{"blobs", "layers"} {
			os.RemoveAll(filepath.Join(e.dir, d))
		}
		run := func(id string, ref provision.ImageRef) {
			if _, err := e.m.Provision(b.Context(), id, refSpec(ref, "/bin/sleep", "60")); err != nil {
				b.Fatal(err)
			}
		}
		run("share-a", a)
		before := proxy.BlobBytes()
		run("share-b", bb)
		second = proxy.BlobBytes() - before
		for _, id := range []string{"share-a", "share-b"} {
			if err := e.m.Decommission(b.Context(), id); err != nil {
				b.Fatal(err)
			}
		}
		ownSize, _ := own.Size()
		cfg, _ := imgB.RawConfigFile()
		ownBytes = ownSize + int64(len(cfg))
	}
	b.ReportMetric(float64(second), "second-image-bytes")
	b.ReportMetric(float64(ownBytes), "own-bytes")
	b.ReportMetric(float64(second)/float64(ownBytes), "ratio")
}
