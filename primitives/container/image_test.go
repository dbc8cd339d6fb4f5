package container

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

type entry struct {
	typ      byte
	name     string
	linkname string
	body     string
	mode     int64
}

func tarball(t testing.TB, gz bool, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w = &buf
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: e.typ, Name: e.name, Linkname: e.linkname, Mode: e.mode,
			Size: int64(len(e.body)), Uid: os.Getuid(), Gid: os.Getgid()}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if !gz {
		return buf.Bytes()
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(buf.Bytes())
	zw.Close()
	return z.Bytes()
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// newTestManager returns a Manager on a temporary data directory that
// serves local images from below localImages ("": none).
func newTestManager(t testing.TB, localImages string) *Manager {
	t.Helper()
	return New(Options{DataDir: t.TempDir(), LocalImages: localImages})
}

func TestUnpack(t *testing.T) {
	tests := []struct {
		name    string
		gz      bool
		entries []entry
		check   map[string]string // path inside the image → content ("" = must not exist)
		outside string            // a path outside the image that must not exist
		wantErr bool
	}{
		{
			name: "plain",
			entries: []entry{
				{typ: tar.TypeDir, name: "./", mode: 0o755},
				{typ: tar.TypeDir, name: "etc/", mode: 0o755},
				{typ: tar.TypeReg, name: "etc/hostname", body: "box\n"},
				{typ: tar.TypeSymlink, name: "etc/link", linkname: "hostname"},
				{typ: tar.TypeLink, name: "etc/hard", linkname: "etc/hostname"},
				{typ: tar.TypeReg, name: "deep/implicit/dir/file", body: "x"},
			},
			check: map[string]string{"etc/hostname": "box\n", "etc/link": "box\n", "etc/hard": "box\n", "deep/implicit/dir/file": "x"},
		},
		{
			name: "gzip",
			gz:   true,
			entries: []entry{
				{typ: tar.TypeReg, name: "a", body: "zipped"},
			},
			check: map[string]string{"a": "zipped"},
		},
		{
			name: "dotdot-stays-inside",
			entries: []entry{
				{typ: tar.TypeReg, name: "../../escape", body: "no"},
			},
			check:   map[string]string{"escape": "no"},
			outside: "escape",
		},
		{
			name: "symlink-parent-cannot-escape",
			entries: []entry{
				{typ: tar.TypeSymlink, name: "evil", linkname: "/tmp/.."},
				{typ: tar.TypeReg, name: "evil/planted", body: "no"},
			},
			outside: "planted",
			wantErr: true,
		},
		{
			name: "later-entry-replaces",
			entries: []entry{
				{typ: tar.TypeSymlink, name: "f", linkname: "/etc/passwd"},
				{typ: tar.TypeReg, name: "f", body: "mine"},
			},
			check: map[string]string{"f": "mine"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "rootfs")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			err := unpack(t.Context(), bytes.NewReader(tarball(t, tc.gz, tc.entries...)), dir, newTestManager(t, "").imageLimit)
			if (err != nil) != tc.wantErr {
				t.Fatalf("unpack = %v, want error %v", err, tc.wantErr)
			}
			for p, want := range tc.check {
				got, err := os.ReadFile(filepath.Join(dir, p))
				if err != nil || string(got) != want {
					t.Errorf("%s = %q, %v; want %q", p, got, err, want)
				}
			}
			if tc.outside != "" {
				for _, p := range []string{filepath.Join(parent, tc.outside), filepath.Join("/", tc.outside)} {
					if _, err := os.Lstat(p); err == nil {
						t.Errorf("entry escaped the image to %s", p)
					}
				}
			}
		})
	}
}

// TestEnsureImage fetches images over http and from the node's local
// image directory, and refuses every local path that is not a regular
// file below that directory, also one reached through a symlink that
// leaves it, without unpacking anything.
func TestEnsureImage(t *testing.T) {
	img := tarball(t, false, entry{typ: tar.TypeReg, name: "bin/x", body: "binary", mode: 0o755})
	digest := digestOf(img)
	// served is the node's local image directory; outside and sibling
	// (whose name starts with served's) lie beside it and hold the same
	// image, so a path that reached them would unpack.
	served := t.TempDir()
	outside := t.TempDir()
	sibling := served + "-sibling"
	if err := os.Mkdir(sibling, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sibling) })
	local := filepath.Join(served, "img.tar")
	elsewhere := filepath.Join(outside, "img.tar")
	for _, p := range []string{local, elsewhere, filepath.Join(sibling, "img.tar")} {
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fifo := filepath.Join(served, "fifo.tar")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(served, "dir.tar"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{
		"inside-link.tar":   "img.tar",
		"abs-link.tar":      elsewhere,
		"rel-link.tar":      filepath.Join("..", filepath.Base(outside), "img.tar"),
		"linked-dir":        outside,
		"rel-linked-dir":    filepath.Join("..", filepath.Base(outside)),
		"loop-a.tar":        "loop-b.tar",
		"loop-b.tar":        "loop-a.tar",
		"dangling-link.tar": filepath.Join(outside, "none.tar"),
	} {
		if err := os.Symlink(target, filepath.Join(served, name)); err != nil {
			t.Fatal(err)
		}
	}
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		switch r.URL.Path {
		case "/img.tar":
			w.Write(img)
		case "/busy":
			http.Error(w, "later", http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)

	const notBelow = "is not below the node's local image directory"
	tests := []struct {
		name      string
		dir       string // the Manager's LocalImages
		src       string
		digest    string
		want      error
		msg       string // what a refusal's message says
		temporary bool
	}{
		{"local", served, local, digest, nil, "", false},
		{"local-symlink-inside", served, filepath.Join(served, "inside-link.tar"), digest, nil, "", false},
		{"http", "", srv.URL + "/img.tar", digest, nil, "", false},
		{"local-mismatch", served, local, digestOf([]byte("other")), ErrDigestMismatch, "does not have sha256", false},
		{"http-mismatch", "", srv.URL + "/img.tar", digestOf([]byte("other")), ErrDigestMismatch, "does not have sha256", false},
		{"http-not-found", "", srv.URL + "/missing.tar", digest, ErrImageNotFound, "refused by the server", false},
		{"http-unavailable", "", srv.URL + "/busy", digest, nil, "", true},
		{"local-missing", served, filepath.Join(served, "nonexistent.tar"), digest, ErrImageNotFound, "not found", false},
		{"local-device", "/", "/dev/zero", digest, ErrBadImage, "not a regular file", false},
		{"local-fifo", served, fifo, digest, ErrBadImage, "not a regular file", false},
		{"local-directory", served, filepath.Join(served, "dir.tar"), digest, ErrBadImage, "not a regular file", false},
		// Local images not served at all: the default.
		{"local-disabled", "", local, digest, ErrBadImage, "not served by this node", false},
		{"local-disabled-device", "", "/dev/zero", digest, ErrBadImage, "not served by this node", false},
		// Outside the directory: the same answer whether the file exists
		// or not, so nothing is learnt about it.
		{"outside", served, elsewhere, digest, ErrBadImage, notBelow, false},
		{"outside-missing", served, "/nonexistent.tar", digest, ErrBadImage, notBelow, false},
		{"outside-device", served, "/dev/zero", digest, ErrBadImage, notBelow, false},
		{"outside-sibling-prefix", served, filepath.Join(sibling, "img.tar"), digest, ErrBadImage, notBelow, false},
		{"outside-dotdot", served, served + "/../" + filepath.Base(outside) + "/img.tar", digest, ErrBadImage, notBelow, false},
		{"outside-relative", served, "img.tar", digest, ErrBadImage, notBelow, false},
		{"the-directory-itself", served, served, digest, ErrBadImage, notBelow, false},
		// Inside by its path, outside through a symlink: os.Root refuses.
		{"symlink-escape-absolute", served, filepath.Join(served, "abs-link.tar"), digest, ErrBadImage, notBelow, false},
		{"symlink-escape-relative", served, filepath.Join(served, "rel-link.tar"), digest, ErrBadImage, notBelow, false},
		{"symlink-escape-dangling", served, filepath.Join(served, "dangling-link.tar"), digest, ErrBadImage, notBelow, false},
		{"symlinked-dir-escape", served, filepath.Join(served, "linked-dir", "img.tar"), digest, ErrBadImage, notBelow, false},
		{"symlinked-dir-escape-relative", served, filepath.Join(served, "rel-linked-dir", "img.tar"), digest, ErrBadImage, notBelow, false},
		{"symlink-loop", served, filepath.Join(served, "loop-a.tar"), digest, ErrBadImage, "too many levels of symbolic links", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestManager(t, tc.dir)
			m.client = newImageGuard([]string{"127.0.0.1"}).client()
			dir, err := m.ensureImage(t.Context(), tc.src, tc.digest)
			// Nothing of what came back is echoed: not the status (as a
			// word: the test's directory or port may hold its digits),
			// not the digest of what was read.
			if err != nil && (echoedStatus.MatchString(err.Error()) || strings.Contains(err.Error(), digest) && tc.want == ErrDigestMismatch) {
				t.Fatalf("ensureImage = %v: echoes what the node read", err)
			}
			switch {
			case tc.temporary:
				if err == nil || !provision.IsTemporary(err) {
					t.Fatalf("ensureImage = %v, want a temporary error", err)
				}
			case tc.want != nil:
				if !errors.Is(err, tc.want) || provision.IsTemporary(err) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("ensureImage = %v, want permanent %v saying %q", err, tc.want, tc.msg)
				}
				// The message names what the user gave, nothing more
				// of the node's directories.
				if rest := strings.ReplaceAll(err.Error(), tc.src, ""); tc.dir != "" && tc.dir != "/" && strings.Contains(rest, tc.dir) {
					t.Fatalf("ensureImage = %v: names the local image directory", err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if b, err := os.ReadFile(filepath.Join(dir, "bin/x")); err != nil || string(b) != "binary" {
					t.Fatalf("bin/x = %q, %v", b, err)
				}
			}
			if tc.want != nil || tc.temporary {
				entries, _ := os.ReadDir(m.imagesDir)
				if len(entries) != 0 {
					t.Fatalf("a refused image left %v", entries)
				}
			}
		})
	}

	t.Run("unpacked-once", func(t *testing.T) {
		m := newTestManager(t, "")
		m.client = newImageGuard([]string{"127.0.0.1"}).client()
		before := requests
		for range 3 {
			if _, err := m.ensureImage(t.Context(), srv.URL+"/img.tar", digest); err != nil {
				t.Fatal(err)
			}
		}
		if requests-before != 1 {
			t.Fatalf("downloaded %d times, want once", requests-before)
		}
	})
}

// echoedStatus finds an HTTP status the image server answered.
var echoedStatus = regexp.MustCompile(`\b(404|503)\b`)

func FuzzUnpack(f *testing.F) {
	f.Add(tarball(f, false, entry{typ: tar.TypeReg, name: "a/b", body: "x"}))
	f.Add(tarball(f, true, entry{typ: tar.TypeSymlink, name: "l", linkname: "../.."}))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "rootfs")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		unpack(t.Context(), bytes.NewReader(data), dir, imageLimit{bytes: 1 << 20, entries: 1000})
		entries, err := os.ReadDir(parent)
		if err != nil || len(entries) != 1 {
			t.Fatalf("unpack wrote beside its directory: %v %v", entries, err)
		}
	})
}

// A local image that never ends (here a sparse file of 1 TiB) is read only
// until the operation's context ends, and leaves nothing behind.
func TestEnsureImageEndlessFile(t *testing.T) {
	endless := filepath.Join(t.TempDir(), "endless.tar")
	f, err := os.Create(endless)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 40); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m := newTestManager(t, filepath.Dir(endless))
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := m.ensureImage(ctx, endless, digestOf([]byte("x"))); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ensureImage of an endless file = %v, want the context's deadline", err)
	}
	if entries, _ := os.ReadDir(m.imagesDir); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

// An image that unpacks to more file content or more entries than the
// limits fails for good with ErrImageTooLarge and leaves nothing; one at
// the limits unpacks. A tar bomb (a small gzip of a large file of zeros)
// is refused without writing it.
func TestEnsureImageLimits(t *testing.T) {
	files := func(n int, body string) []entry {
		var es []entry
		for i := range n {
			es = append(es, entry{typ: tar.TypeReg, name: "f" + string(rune('a'+i)), body: body})
		}
		return es
	}
	bomb := tarball(t, true, entry{typ: tar.TypeReg, name: "zeros", body: string(make([]byte, 8<<20))})
	if len(bomb) > 64<<10 {
		t.Fatalf("the bomb is %d bytes compressed; want a small one", len(bomb))
	}
	tests := []struct {
		name    string
		img     []byte
		tooBig  bool
		message string
	}{
		{"at-the-limits", tarball(t, false, files(4, "0123456789")...), false, ""},
		{"one-byte-over", tarball(t, false, append(files(3, "0123456789"), entry{typ: tar.TypeReg, name: "last", body: "0123456789x"})...), true, "more than 40 bytes"},
		{"one-entry-over", tarball(t, false, append(files(4, "x"), entry{typ: tar.TypeDir, name: "d/", mode: 0o755})...), true, "more than 4 entries"},
		{"gzip-bomb", bomb, true, "more than 40 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			local := filepath.Join(t.TempDir(), "img.tar")
			m := New(Options{DataDir: t.TempDir(), MaxImageSize: 40, MaxImageEntries: 4, LocalImages: filepath.Dir(local)})
			if err := os.WriteFile(local, tc.img, 0o644); err != nil {
				t.Fatal(err)
			}
			dir, err := m.ensureImage(t.Context(), local, digestOf(tc.img))
			if !tc.tooBig {
				if err != nil {
					t.Fatalf("ensureImage = %v", err)
				}
				if b, err := os.ReadFile(filepath.Join(dir, "fa")); err != nil || string(b) != "0123456789" {
					t.Fatalf("unpacked fa = %q, %v", b, err)
				}
				return
			}
			if !errors.Is(err, ErrImageTooLarge) || provision.IsTemporary(err) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("ensureImage = %v; want a permanent ErrImageTooLarge saying %q", err, tc.message)
			}
			if entries, _ := os.ReadDir(m.imagesDir); len(entries) != 0 {
				t.Fatalf("left behind: %v", entries)
			}
		})
	}
}

// An image unpacked once is used again by digest, but only for a source
// the node serves: a local path outside the local image directory, or any
// local path once local images are off, is refused even though the image
// of its digest is at hand.
func TestEnsureImageCachedStillChecksPath(t *testing.T) {
	img := tarball(t, false, entry{name: "hello", body: "hi"})
	digest := digestOf(img)
	served := t.TempDir()
	local := filepath.Join(served, "img.tar")
	if err := os.WriteFile(local, img, 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	m := New(Options{DataDir: dataDir, LocalImages: served})
	dir, err := m.ensureImage(t.Context(), local, digest)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m.ensureImage(t.Context(), filepath.Join(served, "other-name.tar"), digest); err != nil || got != dir {
		t.Fatalf("a served path of a cached digest = %q, %v; want %q", got, err, dir)
	}
	off := New(Options{DataDir: dataDir})
	for _, tc := range []struct {
		m   *Manager
		src string
	}{
		{m, "/etc/passwd"},
		{m, filepath.Dir(served) + "/elsewhere.tar"},
		{off, local},
	} {
		_, err := tc.m.ensureImage(t.Context(), tc.src, digest)
		if !errors.Is(err, ErrBadImage) || provision.IsTemporary(err) {
			t.Errorf("%s (local images %q) with a cached digest: %v, want a permanent ErrBadImage", tc.src, tc.m.local, err)
		}
	}
}
