// Package registrytest runs Debian's docker-registry (CNCF distribution,
// registry:2) on 127.0.0.1 for a test, with its storage in the test's
// directory, and builds busybox-based OCI images to push to it with
// go-containerregistry.
package registrytest

import (
	"archive/tar"
	"bytes"
	crand "crypto/rand"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// Registry is a running docker-registry.
type Registry struct {
	// Host is its 127.0.0.1:PORT.
	Host string
	// Root is its storage directory.
	Root string
	auth authn.Authenticator
}

// Options configures Start.
type Options struct {
	// User and Password, when set, make the registry require basic auth
	// (htpasswd) for everything.
	User, Password string
}

// Start runs a registry for t and stops it when t ends. It skips the test
// when docker-registry is not installed (fails in CI).
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	bin := testutil.RequiresCommand(t, "docker-registry")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close() // the registry binds it again; a race with another test is unlikely
	r := &Registry{Host: host, Root: filepath.Join(dir, "storage"), auth: authn.Anonymous}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, r.Root, host)
	if opts.User != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(opts.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(opts.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", pw)
		r.auth = &authn.Basic{Username: opts.User, Password: opts.Password}
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return r
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("docker-registry did not answer on %s: %v\n%s", host, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *Registry) tag(t testing.TB, repo string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(r.Host+"/"+repo+":test", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// Push pushes img to repo and returns its reference by digest.
func (r *Registry) Push(t testing.TB, repo string, img v1.Image) provision.ImageRef {
	t.Helper()
	if err := remote.Write(r.tag(t, repo), img, remote.WithAuth(r.auth)); err != nil {
		t.Fatalf("pushing %s: %v", repo, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return provision.ImageRef{Registry: r.Host, Repository: repo, Digest: d.Hex}
}

// PushIndex pushes idx (and its images) to repo and returns its reference
// by digest.
func (r *Registry) PushIndex(t testing.TB, repo string, idx v1.ImageIndex) provision.ImageRef {
	t.Helper()
	if err := remote.WriteIndex(r.tag(t, repo), idx, remote.WithAuth(r.auth)); err != nil {
		t.Fatalf("pushing index %s: %v", repo, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return provision.ImageRef{Registry: r.Host, Repository: repo, Digest: d.Hex}
}

// BlobPath returns where the registry stores the blob of digest (hex), to
// tamper with it.
func (r *Registry) BlobPath(digest string) string {
	return filepath.Join(r.Root, "docker/registry/v2/blobs/sha256", digest[:2], digest, "data")
}

// Tamper flips a byte in the middle of the stored blob of digest: the
// registry then serves bytes that are not its digest.
func (r *Registry) Tamper(t testing.TB, digest string) {
	t.Helper()
	p := r.BlobPath(digest)
	blob, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	blob[len(blob)/2] ^= 0xff
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
}

// File is an entry of a layer made by Layer.
type File struct {
	// Name is its path.
	Name string
	// Body is a regular file's content.
	Body []byte
	// Mode is its permission bits (default 0644, 0755 for a directory).
	Mode int64
	// Type is the tar type flag (default a regular file).
	Type byte
	// Link is a symlink's or hard link's target.
	Link string
}

// Layer returns a gzip layer holding files.
func Layer(t testing.TB, files []File) v1.Layer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		h := &tar.Header{Name: f.Name, Mode: f.Mode, Typeflag: f.Type, Linkname: f.Link}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.Body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	raw := b.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// BusyboxLayer returns a layer of the host's static busybox and its
// applets (internal/fixture's rootfs).
func BusyboxLayer(t testing.TB) v1.Layer {
	t.Helper()
	p, _ := fixture.Busybox(t)
	l, err := tarball.LayerFromFile(p, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Image returns an OCI image of layers, base first, for linux/arch.
func Image(t testing.TB, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// Index returns an OCI index of images, each for its platform.
func Index(t testing.TB, imgs map[string]v1.Image) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for arch, img := range imgs {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	return idx
}

// Proxy is a reverse proxy on 127.0.0.1 in front of a registry that counts
// the blob bytes it passes and can cut a blob download short.
type Proxy struct {
	// Host is the proxy's 127.0.0.1:PORT.
	Host string

	mu        sync.Mutex
	blobBytes int64
	blobGets  map[string]int // path → GETs
	ranges    []string
	cutAfter  int64 // cut the next blob answer after this many bytes; 0: none
}

// StartProxy starts a Proxy for t in front of target (HOST:PORT).
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p := &Proxy{blobGets: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/blobs/") || r.Method != http.MethodGet {
			rp.ServeHTTP(w, r)
			return
		}
		p.mu.Lock()
		p.blobGets[r.URL.Path]++
		if rg := r.Header.Get("Range"); rg != "" {
			p.ranges = append(p.ranges, rg)
		}
		cut := p.cutAfter
		p.mu.Unlock()
		cw := &countingWriter{ResponseWriter: w, p: p, left: cut}
		rp.ServeHTTP(cw, r)
	}))
	t.Cleanup(srv.Close)
	p.Host = strings.TrimPrefix(srv.URL, "http://")
	return p
}

// CutNext makes the next blob answer that reaches n bytes end there, as a
// dropped connection.
func (p *Proxy) CutNext(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutAfter = n
}

// BlobBytes returns the blob bytes passed so far.
func (p *Proxy) BlobBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blobBytes
}

// BlobGets returns how many GETs each blob path had.
func (p *Proxy) BlobGets() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.blobGets)
}

// Ranges returns the Range headers of blob GETs.
func (p *Proxy) Ranges() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ranges)
}

type countingWriter struct {
	http.ResponseWriter
	p    *Proxy
	left int64 // > 0: bytes until the cut
}

func (c *countingWriter) Write(b []byte) (int, error) {
	cut := false
	if c.left > 0 && int64(len(b)) >= c.left {
		b, cut = b[:c.left], true
	}
	if c.left > 0 {
		c.left -= int64(len(b))
	}
	n, err := c.ResponseWriter.Write(b)
	c.p.mu.Lock()
	c.p.blobBytes += int64(n)
	c.p.mu.Unlock()
	if cut {
		c.p.mu.Lock()
		c.p.cutAfter = 0
		c.p.mu.Unlock()
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler) // drops the connection mid-body
	}
	return n, err
}

// WriteLayout writes img as an OCI image layout in a new directory, as
// `provisiond image import` reads one, and returns the directory.
func WriteLayout(t testing.TB, img v1.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	return dir
}

// BigImage pushes to r, as repository "big", a busybox image with a
// 50 MB layer of random bytes (incompressible: what a registry serves is
// what the node writes), for the cold-start benchmarks.
func BigImage(t testing.TB, r *Registry) (provision.ImageRef, v1.Image) {
	t.Helper()
	data := make([]byte, 50<<20)
	crand.Read(data)
	img := Image(t, runtime.GOARCH, BusyboxLayer(t),
		Layer(t, []File{{Name: "data/", Type: '5'}, {Name: "data/blob", Body: data}}))
	return r.Push(t, "big", img), img
}

// CurlTar is what the cold-start benchmarks compare with: `curl` fetches
// the config and layers of img (pushed to r as ref) and `tar -xzf`
// extracts the layers into a fresh directory. It returns how long that
// took.
func CurlTar(t testing.TB, r *Registry, ref provision.ImageRef, img v1.Image) time.Duration {
	t.Helper()
	testutil.RequiresCommand(t, "curl")
	dir := t.TempDir()
	defer os.RemoveAll(dir)
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	blob := func(d v1.Hash) string {
		p := filepath.Join(dir, d.Hex)
		url := fmt.Sprintf("http://%s/v2/%s/blobs/%s", r.Host, ref.Repository, d)
		if out, err := exec.Command("curl", "-sSfL", "-o", p, url).CombinedOutput(); err != nil {
			t.Fatalf("curl: %v %s", err, out)
		}
		return p
	}
	blob(cfg)
	for _, l := range layers {
		d, _ := l.Digest()
		if out, err := exec.Command("tar", "-xzf", blob(d), "-C", rootfs).CombinedOutput(); err != nil {
			t.Fatalf("tar: %v %s", err, out)
		}
	}
	return time.Since(start)
}

// MedianMs returns the median of ds in milliseconds.
func MedianMs(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}
